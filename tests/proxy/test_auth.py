"""Identities: scrypt hashes, the failed-login throttle, and LDAP against a real slapd."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from pathlib import Path

import pytest

from proxy.auth import (
    LDAP_UNAVAILABLE_MESSAGE,
    Authenticator,
    LoginThrottle,
    hash_password,
    verify_password,
)
from proxy.config import GatewayConfig, LdapConfig, UserConfig
from tests.fixtures.gateway import GatewayHarness, LineConsole
from tests.fixtures.processes import free_port
from tests.fixtures.slapd import GROUP_BASE, USER_DN, Slapd

pytestmark = pytest.mark.timeout(30)


def test_hash_verifies_only_its_password() -> None:
    encoded = hash_password("correct horse", log_n=10)
    assert encoded.startswith("$scrypt$ln=10,r=8,p=1$")
    assert verify_password("correct horse", encoded)
    assert not verify_password("correct horsE", encoded)
    assert hash_password("correct horse", log_n=10) != encoded  # salted


@pytest.mark.parametrize(
    "broken", ["", "$scrypt$", "$scrypt$ln=99,r=8,p=1$AAAA$AAAA", "$scrypt$ln=10$!!$!!", "x$y"]
)
def test_malformed_hash_never_matches(broken: str) -> None:
    assert not verify_password("", broken)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_throttle_lets_a_few_failures_through_then_spaces_attempts() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(clock=clock)
    key = ("10.0.0.1", "alice")
    waits = []
    for _ in range(6):
        waits.append(throttle.reserve(key))
        throttle.failed(key)
    assert waits[:4] == [0.0, 0.0, 0.0, 0.0]
    assert waits[4] == pytest.approx(0.5)
    assert waits[5] == pytest.approx(0.5 + 1.0)


def test_a_burst_of_1000_failures_is_spread_out_and_others_are_not_slowed() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(clock=clock)
    burst = [throttle.reserve(("10.0.0.9", "alice")) for _ in range(1000)]
    assert burst[:3] == [0.0, 0.0, 0.0]
    assert burst == sorted(burst)
    assert burst[-1] > 3600  # the last guess waits more than an hour
    assert throttle.reserve(("10.0.0.7", "bob")) == 0.0
    assert throttle.reserve(("10.0.0.9", "bob")) > 3600  # the guessing address waits its turn
    assert throttle.reserve(("10.0.0.7", "ALICE ")) > 3600  # and so does alice, from anywhere


def test_spellings_of_one_name_share_one_count() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(clock=clock)
    waits = []
    for spelling in ["carol", "CAROL", "Carol ", " cArOl", "carol  ", "ＣＡＲＯＬ"]:
        waits.append(throttle.reserve((f"10.0.0.{len(waits)}", spelling)))
        throttle.failed((f"10.0.0.{len(waits)}", spelling))
    assert waits[:4] == [0.0, 0.0, 0.0, 0.0]
    assert waits[4:] == [pytest.approx(0.5), pytest.approx(0.5 + 1.0)]


def test_many_names_from_one_address_are_slowed_by_the_address() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(clock=clock)
    waits = []
    for n in range(14):
        waits.append(throttle.reserve(("10.0.0.1", f"user{n}")))
        throttle.failed(("10.0.0.1", f"user{n}"))
    assert waits[:11] == [0.0] * 11
    assert waits[11:] == [pytest.approx(0.5), pytest.approx(1.5), pytest.approx(3.5)]
    throttle.reserve(("10.0.0.1", "mine"))
    throttle.succeeded(("10.0.0.1", "mine"))  # one's own login does not wipe the address
    assert throttle.reserve(("10.0.0.1", "user99")) > 3.5


def test_an_ipv6_prefix_and_a_mapped_address_count_as_one_address() -> None:
    """Cycling through one's IPv6 /64, or spelling an IPv4 address as IPv4-mapped IPv6, does
    not make a guesser a new address each time."""
    clock = FakeClock()
    throttle = LoginThrottle(clock=clock)
    v6 = [f"2001:db8:1:2::{n:x}" for n in range(1, 12)] + ["2001:db8:1:2:ffff::9"]
    v4 = ["::ffff:10.1.1.1", "10.1.1.1", "::ffff:a01:101"] * 4
    for addresses in (v6, v4):
        waits = []
        for n, address in enumerate(addresses):
            waits.append(throttle.reserve((address, f"user{n}-{address}")))
            throttle.failed((address, f"user{n}-{address}"))
        assert waits[:11] == [0.0] * 11 and waits[11] > 0, addresses[0]
    assert throttle.reserve(("2001:db8:1:3::1", "new")) == 0.0  # the next /64 is someone else


def test_the_throttle_tables_are_bounded_and_expire() -> None:
    """50,000 failures with distinct names from distinct addresses keep each table at its
    bound; a name being guessed all along keeps its count; a newcomer is not made to wait."""
    clock = FakeClock()
    throttle = LoginThrottle(clock=clock, max_entries=1000)
    for n in range(50_000):
        key = (f"10.{n // 65536}.{n // 256 % 256}.{n % 256}", f"user{n}")
        throttle.reserve(key)
        throttle.failed(key)
        if n % 500 == 0:
            throttle.reserve((f"10.200.0.{n % 256}", "carol"))
            throttle.failed((f"10.200.0.{n % 256}", "carol"))
        clock.now += 0.001
    assert len(throttle.people.entries) <= 1000 and len(throttle.addresses.entries) <= 1000
    assert throttle.reserve(("10.201.0.1", "CAROL")) > 0  # still counted after the flood
    assert throttle.reserve(("10.201.0.2", "someone-new")) == 0.0
    clock.now += 3600
    for n in range(5):
        assert throttle.reserve((f"10.8.8.{n}", f"later{n}")) == 0.0
    assert len(throttle) <= 14  # the stale entries were swept


def test_throttle_forgets_after_success_and_after_quiet_time() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(clock=clock)
    key = ("10.0.0.1", "alice")
    for _ in range(5):
        throttle.reserve(key)
        throttle.failed(key)
    assert throttle.reserve(key) > 0
    throttle.succeeded(key)
    assert not throttle.people.entries
    for _ in range(5):
        throttle.reserve(key)
        throttle.failed(key)
    clock.now += 3600
    assert throttle.reserve(key) == 0.0


def make_config(tmp_path: Path, ldap_url: str | None) -> GatewayConfig:
    users = {
        "alice": UserConfig(
            "alice", password_hash=hash_password("alice-pw", log_n=10), groups=("dev",)
        )
    }
    ldap = (
        LdapConfig(url=ldap_url, user_dn=USER_DN, group_base=GROUP_BASE, timeout=2.0)
        if (ldap_url)
        else None
    )
    return GatewayConfig(
        path=tmp_path / "gateway.toml",
        data_dir=tmp_path,
        gateway_id="t",
        raw={},
        users=users,
        ldap=ldap,
    )


async def test_ldap_password_login_gets_groups_from_group_base_and_member_of(
    tmp_path: Path, slapd: Slapd
) -> None:
    auth = Authenticator(make_config(tmp_path, slapd.url))
    try:
        result = await auth.check_password("carol", "carol-pw", "127.0.0.1")
        assert result.identity is not None
        assert result.identity.source == "ldap"
        assert result.identity.groups == {"dev", "team-blue"}
        for name, password in [("carol", "wrong"), ("carol", ""), ("nobody", "x")]:
            refused = await auth.check_password(name, password, "127.0.0.1")
            assert refused.identity is None
            assert refused.message == ""
    finally:
        auth.close()


async def test_ldap_public_keys_skip_values_that_are_not_keys(
    tmp_path: Path, slapd: Slapd, ldap_keys: dict[str, Path]
) -> None:
    auth = Authenticator(make_config(tmp_path, slapd.url))
    try:
        keys, result = await auth.authorized_keys("erin")
        assert keys is not None and result.identity is not None
        assert result.identity.groups == {"team-blue"}
        public = ldap_keys["erin"].with_name("erin_key.pub").read_text().split()[1]
        assert public in str([key.key.export_public_key().decode() for key in keys._user_entries])
        assert len(keys._user_entries) == 1
        none, missing = await auth.authorized_keys("nobody")
        assert none is None and missing.identity is None
    finally:
        auth.close()


async def test_unreachable_ldap_fails_closed_and_local_users_still_work(tmp_path: Path) -> None:
    auth = Authenticator(make_config(tmp_path, f"ldap://127.0.0.1:{free_port()}"))
    try:
        refused = await auth.check_password("carol", "carol-pw", "127.0.0.1")
        assert refused.identity is None
        assert refused.message == LDAP_UNAVAILABLE_MESSAGE
        keys, by_key = await auth.authorized_keys("carol")
        assert keys is None and by_key.message == LDAP_UNAVAILABLE_MESSAGE
        local = await auth.check_password("alice", "alice-pw", "127.0.0.1")
        assert local.identity is not None and local.identity.source == "local"
    finally:
        auth.close()


async def test_failed_logins_are_slowed_per_user_and_address(tmp_path: Path) -> None:
    throttle = LoginThrottle(base_delay=0.2, max_delay=0.2)
    auth = Authenticator(make_config(tmp_path, None), throttle=throttle)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.gather(*(auth.check_password("alice", "bad", "10.0.0.1") for _ in range(8)))
        assert loop.time() - started >= 4 * 0.2 * 0.9  # attempts 5 to 8 wait 0.2 s each
        started = loop.time()
        ok = await auth.check_password("alice", "alice-pw", "10.0.0.2")
        assert ok.identity is not None
        assert loop.time() - started < 0.75  # not queued behind the throttled guesses
    finally:
        auth.close()


async def test_every_spelling_of_a_directory_name_is_its_one_stored_identity(
    tmp_path: Path, slapd: Slapd
) -> None:
    """OpenLDAP binds `CAROL` and `'Carol '` with carol's password: the identity is still the
    entry's stored name and DN, whatever was typed."""
    auth = Authenticator(make_config(tmp_path, slapd.url))
    carol_dn = USER_DN.replace("{user}", "carol")
    try:
        for spelling in ["carol", "CAROL", "Carol ", " cArOl"]:
            result = await auth.check_password(spelling, "carol-pw", "127.0.0.1")
            assert result.identity is not None, spelling
            assert (result.identity.name, result.identity.dn) == ("carol", carol_dn)
            assert result.identity.groups == {"dev", "team-blue"}
        for spelling in ["ERIN", "erin "]:
            keys, by_key = await auth.authorized_keys(spelling)
            assert keys is not None and by_key.identity is not None
            assert by_key.identity.name == "erin"
    finally:
        auth.close()


async def test_a_local_user_is_named_as_configured_whatever_the_spelling(tmp_path: Path) -> None:
    auth = Authenticator(make_config(tmp_path, None))
    try:
        for spelling in ["ALICE", "Alice ", "alice"]:
            result = await auth.check_password(spelling, "alice-pw", "127.0.0.1")
            assert result.identity is not None and result.identity.name == "alice", spelling
    finally:
        auth.close()


async def test_guesses_over_spellings_of_one_directory_name_are_slowed_as_one(
    tmp_path: Path, slapd: Slapd
) -> None:
    """Ten wrong passwords for carol, each under another spelling, from ten addresses: the
    throttle counts one person, so attempts 5 to 10 wait."""
    throttle = LoginThrottle(base_delay=0.2, max_delay=0.2)
    auth = Authenticator(make_config(tmp_path, slapd.url), throttle=throttle)
    spellings = ["carol", "CAROL", "Carol", "cArol", "caRol", "carOl", "caroL", " carol"]
    spellings += ["carol ", "CArol"]
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        for n, spelling in enumerate(spellings):
            refused = await auth.check_password(spelling, f"guess-{n}", f"10.0.1.{n}")
            assert refused.identity is None
        assert loop.time() - started >= 6 * 0.2 * 0.9
        ok = await auth.check_password("dave", "dave-pw", "10.0.2.1")
        assert ok.identity is not None and ok.identity.name == "dave"
    finally:
        auth.close()


# -- one person, one identity, through the real gateway ------------------------------------------


async def ldap_gateway(
    harness: GatewayHarness, slapd: Slapd, ldap_keys: dict[str, Path], **rule: object
) -> None:
    """alice (local, dev) and the directory's carol and erin (team-blue) on web1; a rule holds
    `touch *restart*` for two approvals from team-blue, another denies carol `*forbidden*`."""
    harness.ldap = {"url": slapd.url, "user_dn": USER_DN, "group_base": GROUP_BASE, "timeout": 2}
    for name in ("carol", "erin"):
        shutil.copy(ldap_keys[name], harness.directory / f"{name}_key")
    harness.add_user("alice", groups=("dev",))
    harness.add_target("web1", groups=["dev", "team-blue"])
    harness.add_rule("carol-no", users=["carol"], shell="touch *forbidden*", action="deny")
    harness.add_rule(
        "restarts", shell="touch *restart*", action="review", approvers=["team-blue"], **rule
    )
    await harness.start_runtime()


async def console_as(harness: GatewayHarness, login: str, key: str, commands: str) -> str:
    """`ssh -T -l LOGIN gateway console`, the login typed as given; what the console printed."""
    process = await harness.spawn(
        "ssh", "-T", "-p", str(harness.port), "-l", login, "127.0.0.1", "console",
        user=key, key=key, stdin=asyncio.subprocess.PIPE,
    )  # fmt: skip
    console = LineConsole(process)
    try:
        await console.shown(b"hoop> ")
        console.type(commands + "quit\n")
        await console.finish()
    finally:
        await console.close()
    return console.seen.decode("utf-8", "replace")


async def wait_hold(harness: GatewayHarness, count: int = 1):  # type: ignore[no-untyped-def]
    assert harness.runtime is not None
    deadline = time.monotonic() + 15
    while len(await harness.runtime.broker.pending_holds()) < count:
        assert time.monotonic() < deadline, "no hold appeared"
        await asyncio.sleep(0.05)
    return (await harness.runtime.broker.pending_holds())[-1]


@pytest.mark.timeout(90)
async def test_two_spellings_of_one_approver_are_one_approval(
    harness: GatewayHarness, slapd: Slapd, ldap_keys: dict[str, Path], tmp_path: Path
) -> None:
    await ldap_gateway(harness, slapd, ldap_keys, approvals=2, timeout="1m")
    marker = tmp_path / "web.restart"
    client = asyncio.ensure_future(harness.ssh_jump("alice", "web1", f"touch {marker}"))
    try:
        hold = await wait_hold(harness)
        first = await console_as(harness, "CAROL", "carol", f"approve {hold.id} ok\n")
        assert "hoop console for carol (dev, team-blue)" in first
        assert f"{hold.id}: approval recorded (1 of 2)" in first
        second = await console_as(harness, "Carol ", "carol", f"approve {hold.id} ok\n")
        assert f"carol already approved hold {hold.id}; it needs 2 different approvers" in second
        await asyncio.sleep(0.3)
        assert not marker.exists() and not client.done()
        third = await console_as(harness, "erin", "erin", f"approve {hold.id} ok\n")
        assert f"[{hold.id}] approved" in third
        assert (await client).status == 0 and marker.exists()
    finally:
        client.cancel()
        with contextlib.suppress(BaseException):
            await client
    assert harness.runtime is not None
    audit = await harness.runtime.broker.audit_log()
    assert [e.actor for e in audit if e.action == "hold_approve"] == ["carol", "erin"]


@pytest.mark.timeout(90)
async def test_a_directory_user_cannot_approve_their_own_hold_under_another_spelling(
    harness: GatewayHarness, slapd: Slapd, ldap_keys: dict[str, Path], tmp_path: Path
) -> None:
    await ldap_gateway(harness, slapd, ldap_keys, approvals=1, timeout="1m")
    marker = tmp_path / "db.restart"
    client = asyncio.ensure_future(
        harness.ssh_direct("CAROL+web1", f"touch {marker}", user="carol", key="carol")
    )
    try:
        hold = await wait_hold(harness)
        assert hold.user == "carol"
        shown = await console_as(harness, "carol ", "carol", f"approve {hold.id} mine\n")
        assert "you cannot decide your own request; another approver must" in shown
        await asyncio.sleep(0.3)
        assert not marker.exists() and not client.done()
    finally:
        client.cancel()
        with contextlib.suppress(BaseException):
            await client


@pytest.mark.timeout(90)
async def test_a_rule_for_a_directory_user_applies_to_every_spelling(
    harness: GatewayHarness, slapd: Slapd, ldap_keys: dict[str, Path], tmp_path: Path
) -> None:
    await ldap_gateway(harness, slapd, ldap_keys, timeout="1m")
    for login in ["carol+web1", "CAROL+web1", "carol +web1", " Carol+web1"]:
        marker = tmp_path / "x.forbidden"
        result = await harness.run(
            "ssh", "-p", str(harness.port), "-l", login, "127.0.0.1", f"touch {marker}",
            user="carol", key="carol",
        )  # fmt: skip
        assert result.status == 126, (login, result.err)
        assert "hoop: denied: deny by rule carol-no" in result.err, login
        assert not marker.exists()


@pytest.mark.timeout(120)
async def test_password_guesses_over_ssh_under_spellings_of_one_name_are_slowed(
    harness: GatewayHarness, slapd: Slapd, ldap_keys: dict[str, Path]
) -> None:
    """Real ssh, one wrong password per connection, each under another spelling of carol:
    after the free attempts each guess waits its turn, as for one spelling."""
    await ldap_gateway(harness, slapd, ldap_keys, timeout="1m")
    assert harness.runtime is not None
    harness.runtime.auth.throttle = LoginThrottle(base_delay=3.0, max_delay=3.0)

    async def guess(spelling: str) -> float:
        started = time.monotonic()
        result = await harness.run(
            "ssh", "-p", str(harness.port), "-l", spelling, "127.0.0.1", "true",
            user="carol", password="not-carols",
        )  # fmt: skip
        assert result.status == 255 and "Permission denied" in result.err
        return time.monotonic() - started

    first = await guess("carol")
    for spelling in ["CAROL", "Carol", "carol "]:
        await guess(spelling)  # the free attempts
    later = [await guess(spelling) for spelling in ["cArol", " CAROL"]]
    assert min(later) > first + 2.0, (first, later)


@pytest.mark.timeout(180)
async def test_guesses_from_elsewhere_do_not_lock_a_person_out_of_an_address_they_use(
    harness: GatewayHarness, slapd: Slapd, ldap_keys: dict[str, Path]
) -> None:
    """issue 20, attack: eight wrong passwords for carol at once from 127.0.0.2 queue up in
    her count. Before, carol herself then waited behind all of them (a lockout for the cost
    of a few connections); from an address she has logged in from she now waits only for
    that address's own count. From an address she never used, she still waits her turn."""
    await ldap_gateway(harness, slapd, ldap_keys, timeout="1m")
    assert harness.runtime is not None
    harness.runtime.auth.throttle = LoginThrottle(base_delay=2.0, max_delay=2.0)

    async def login(source: str, password: str) -> tuple[float, int]:
        started = time.monotonic()
        result = await harness.run(
            "ssh", "-b", source, "-p", str(harness.port), "-l", "carol", "127.0.0.1", "true",
            user="carol", password=password, timeout=60,
        )  # fmt: skip
        return time.monotonic() - started, result.status

    took, status = await login("127.0.0.1", "carol-pw")
    assert status == 0
    guesses = [
        await asyncio.create_subprocess_exec(
            "ssh",
            *harness.ssh_args("carol", password=f"guess-{n}"),
            "-b",
            "127.0.0.2",
            "-p",
            str(harness.port),
            "-l",
            "carol",
            "127.0.0.1",
            "true",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            env=harness.env(f"guess-{n}"),
            start_new_session=True,
        )
        for n in range(8)
    ]
    await asyncio.sleep(1.5)  # every guess has taken its place in carol's queue
    took, status = await login("127.0.0.1", "carol-pw")
    assert status == 0
    assert took < 4.0, took  # the queue ahead of her is about 5 * 2 s long
    elsewhere, status = await login("127.0.0.3", "carol-pw")
    assert status == 0 and elsewhere > 4.0, elsewhere
    for guess in guesses:  # the guesses are not what is measured: end those still waiting
        if guess.returncode is None:
            guess.kill()
        assert await guess.wait() != 0


def test_an_address_a_person_used_waits_their_spacing_not_the_queue_of_guesses() -> None:
    """Bookkeeping of the known addresses: a queue of 20 guesses ahead, carol from her own
    address waits the spacing of her count, no more; from a new address, the whole queue. The
    known addresses are bounded per person and overall, and places are given back."""
    clock = FakeClock()
    throttle = LoginThrottle(clock=clock, base_delay=1.0, max_delay=4.0, max_entries=50)
    throttle.reserve(("10.0.0.1", "carol"))
    throttle.succeeded(("10.0.0.1", "carol"))
    for n in range(20):
        throttle.reserve((f"10.9.0.{n}", "carol"))
    assert throttle.reserve(("10.0.0.1", "CAROL")) == 0.0  # no failure yet, only pending
    throttle.failed(("10.0.0.1", "CAROL"))
    for n in range(20):
        throttle.failed((f"10.9.0.{n}", "carol"))
    assert throttle.reserve(("10.0.0.1", "carol")) == 4.0  # her count's spacing, not 20 turns
    throttle.succeeded(("10.0.0.1", "carol"))
    assert not throttle.skipping
    assert throttle.reserve(("10.0.0.2", "carol")) == 0.0  # her success cleared the count
    for n in range(100):
        throttle.reserve((f"10.1.0.{n}", f"user{n}"))
        throttle.succeeded((f"10.1.0.{n}", f"user{n}"))
        throttle.reserve((f"10.2.0.{n}", "dave"))
        throttle.succeeded((f"10.2.0.{n}", "dave"))
    assert len(throttle.known) <= 50 and len(throttle.known["dave"]) <= 16


async def test_a_directory_person_is_never_named_like_a_local_user(
    tmp_path: Path, slapd: Slapd
) -> None:
    """issue 20, attack: two local users whose names fold alike (`Carol`, `carol`) are only
    matched exactly, so `CAROL` went on to the directory, whose carol then logged in under the
    name `carol`: the local carol's name, her grants and rules, held by another person. The
    directory's entry is refused when its name folds like a local user's, by password and by
    key; a name that is nobody's locally still reaches the directory."""
    config = make_config(tmp_path, slapd.url)
    for name in ("Carol", "carol", "ERIN"):
        config.users[name] = UserConfig(name, password_hash=hash_password("local-pw", log_n=10))
    auth = Authenticator(config)
    try:
        for spelling in ["CAROL", "cArOl ", "carol "]:
            result = await auth.check_password(spelling, "carol-pw", "127.0.0.1")
            assert result.identity is None, (spelling, result.identity)
        local = await auth.check_password("carol", "local-pw", "127.0.0.1")
        assert local.identity is not None and local.identity.source == "local"
        keys, by_key = await auth.authorized_keys("Erin ")  # ERIN is a local name
        assert by_key.identity is not None and by_key.identity.source == "local"
        keys, by_key = await auth.authorized_keys("CAROL")
        assert keys is None and by_key.identity is None
        dave = await auth.check_password("DAVE", "dave-pw", "127.0.0.1")
        assert dave.identity is not None and dave.identity.name == "dave"
    finally:
        auth.close()
