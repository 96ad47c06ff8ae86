"""Shared fixtures: a real OpenSSH sshd as the SSH target, a real slapd, and a gateway harness.

The servers start once per test session (they are slow to start and tests never change them);
each test gets its own gateway, data directory and client files.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.fixtures.gateway import GatewayHarness
from tests.fixtures.processes import stop
from tests.fixtures.slapd import LdapUser, Slapd, start_slapd
from tests.fixtures.sshd import Sshd, keygen, start_sshd

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
