"""Shared fixtures: a real OpenSSH sshd as the SSH target, a real slapd, the machine's
PostgreSQL, and a gateway harness.

The servers start once per test session (they are slow to start and tests never change them);
each test gets its own gateway, data directory and client files.

A test that uses one of the server fixtures (`sshd`, `slapd`, `postgres`; SeaweedFS's `seaweed`
and the OpenID provider's `provider` in their folders), directly or through another fixture
such as `harness`, is marked at collection with the server's marker (`sshd`, `slapd`,
`postgres`, `seaweedfs`, `oidc_provider`) and with `servers`, so `pytest -m "not servers"`
runs the pure tests alone (`-m "not sshd and not slapd and not postgres"` leaves out those
three). A test that starts a server by itself carries the marker explicitly.

Two more kinds of test are slow without a server: those that start real programs (bash, the
hoop-tui CLI, asciinema, a child they kill) carry `programs`, and those under
tests/hoop_tui/workstation, which drive the Textual app with its Pilot, are marked `tui`. Every
other test is marked `quick`: `pytest -m quick` runs the pure logic alone, and
`pytest -m "quick and not fuzz"` leaves out the Hypothesis property tests (marked `fuzz`) too,
the inner loop of a few seconds. A quick test that starts a program fails and says which marker
it needs, so the split stays true.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.fixtures.gateway import GatewayHarness
from tests.fixtures.processes import stop
from tests.fixtures.slapd import LdapUser, Slapd, start_slapd
from tests.fixtures.sshd import Sshd, keygen, start_sshd

# The PostgreSQL the tests use: the machine's own, trust auth (see .ci/setup).
POSTGRES_ADDRESS = ("127.0.0.1", 5432)

# fixture name -> the marker of the server it starts or needs.
SERVER_FIXTURES = {
    "sshd": "sshd",
    "slapd": "slapd",
    "postgres": "postgres",
    "cluster": "postgres",  # a private PostgreSQL cluster from initdb (tests/fixtures/pgstate.py)
    "seaweed": "seaweedfs",  # tests/storage/s3/conftest.py
    "provider": "oidc_provider",  # tests/proxy/oidc/conftest.py
    "other_provider": "oidc_provider",
}
SERVER_MARKERS = {
    "sshd": "needs the test OpenSSH sshd (started once per session)",
    "slapd": "needs the test slapd (started once per session)",
    "postgres": "needs the machine's PostgreSQL on 127.0.0.1:5432",
    "seaweedfs": "needs a SeaweedFS object store (weed) started for the test module",
    "oidc_provider": "needs the test OpenID provider (node oidc-provider)",
    "servers": "needs any of the servers above: -m 'not servers' runs the pure tests",
}
OTHER_MARKERS = {
    "programs": "starts real programs (bash, the hoop-tui CLI, asciinema, a child it kills)",
    "tui": "drives the Textual workstation with its Pilot (tests/hoop_tui/workstation)",
    "quick": "none of servers, programs and tui: pure logic, -m quick runs these alone",
    "fuzz": "a Hypothesis property test (many generated inputs): -m 'quick and not fuzz'",
}
WORKSTATION_TESTS = Path(__file__).parent / "hoop_tui" / "workstation"


def pytest_configure(config: pytest.Config) -> None:
    for name, meaning in {**SERVER_MARKERS, **OTHER_MARKERS}.items():
        config.addinivalue_line("markers", f"{name}: {meaning}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for fixture, marker in SERVER_FIXTURES.items():
            if fixture in used and item.get_closest_marker(marker) is None:
                item.add_marker(marker)
        needs = set(SERVER_MARKERS) - {"servers"}
        if any(item.get_closest_marker(marker) for marker in needs):
            item.add_marker("servers")
        if WORKSTATION_TESTS in item.path.parents:
            item.add_marker("tui")
        if not any(item.get_closest_marker(marker) for marker in ("servers", "programs", "tui")):
            item.add_marker("quick")
        if getattr(getattr(item, "obj", None), "is_hypothesis_test", False):
            item.add_marker("fuzz")


@pytest.fixture(autouse=True)
def _quick_tests_start_no_program(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A test marked quick that starts a program fails, naming the marker it needs."""
    if request.node.get_closest_marker("quick") is None:
        return

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(
            "this test starts a program: mark it `programs` (pytest.mark.programs)"
        )

    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse)
    monkeypatch.setattr(os, "fork", refuse)
    monkeypatch.setattr(os, "forkpty", refuse)
    monkeypatch.setattr(os, "posix_spawn", refuse)


if os.environ.get("HOOP_TEST_LOOP") == "uvloop":
    # In-process tests run on asyncio's loop; HOOP_TEST_LOOP=uvloop runs them on uvloop, the
    # loop `hoop-tui gateway` itself uses (its subprocess tests run on uvloop either way).

    @pytest.fixture(scope="session")
    def event_loop_policy() -> asyncio.AbstractEventLoopPolicy:
        import uvloop

        return uvloop.EventLoopPolicy()


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    if not Path("/usr/sbin/sshd").exists():
        pytest.skip("sshd is not installed (bash .ci/setup installs openssh-server)")
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    stop(server.process)


@pytest.fixture(scope="session")
def postgres() -> tuple[str, int]:
    """The machine's PostgreSQL (host, port); the test is skipped when it is not running."""
    with socket.socket() as sock:
        sock.settimeout(1)
        try:
            sock.connect(POSTGRES_ADDRESS)
        except OSError:
            pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    return POSTGRES_ADDRESS


@pytest.fixture(scope="session")
def ldap_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Key pairs of the LDAP users, made once: name -> private key path."""
    directory = tmp_path_factory.mktemp("ldap-keys")
    paths = {}
    for name in ("carol", "erin"):
        keygen(directory / f"{name}_key", name)
        paths[name] = directory / f"{name}_key"
    return paths


@pytest.fixture(scope="session")
def slapd(tmp_path_factory: pytest.TempPathFactory, ldap_keys: dict[str, Path]) -> Iterator[Slapd]:
    if not Path("/usr/sbin/slapd").exists():
        pytest.skip("slapd is not installed (bash .ci/setup installs slapd and ldap-utils)")

    def public(name: str) -> str:
        return ldap_keys[name].with_name(f"{name}_key.pub").read_text().strip()

    users = [
        LdapUser("carol", "carol-pw", [public("carol")], ["dev", "team-blue"]),
        LdapUser("dave", "dave-pw", [], ["ops"]),
        LdapUser("erin", "erin-pw", [public("erin"), "not a key"], ["team-blue"]),
    ]
    server = start_slapd(tmp_path_factory.mktemp("slapd"), users)
    yield server
    stop(server.process)


@pytest.fixture
async def harness(tmp_path: Path, sshd: Sshd) -> AsyncIterator[GatewayHarness]:
    """A gateway to configure and start; stopped (cleanly) after the test."""
    harness = GatewayHarness(tmp_path / "gw", sshd)
    yield harness
    await asyncio.wait_for(harness.stop(), 30)
