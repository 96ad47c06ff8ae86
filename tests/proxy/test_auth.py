"""Identities: scrypt hashes, the failed-login throttle, and LDAP against a real slapd."""

from __future__ import annotations

import asyncio
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
    assert throttle.reserve(("10.0.0.9", "bob")) == 0.0
    assert throttle.reserve(("10.0.0.7", "alice")) == 0.0


def test_throttle_forgets_after_success_and_after_quiet_time() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(clock=clock)
    key = ("10.0.0.1", "alice")
    for _ in range(5):
        throttle.reserve(key)
        throttle.failed(key)
    assert throttle.reserve(key) > 0
    throttle.succeeded(key)
    assert len(throttle) == 0
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
