"""[oidc] and [[agents]] are validated whole, and the device flow keeps the provider's pace
(issue 16)."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config import ConfigError, load_config
from proxy.oidc.device import DeviceFlowFailed, DevicePoll, DeviceStart


def config(tmp_path: Path, oidc: str, agents: str = "") -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(f'[gateway]\ndata_dir = "data"\n\n[oidc]\n{oidc}\n{agents}')
    return path


BASE = 'issuer = "https://login.example.com"\nclient_id = "hoop"\n'


@pytest.mark.parametrize(
    ("extra", "key", "problem"),
    [
        ('issuer = "http://login.example.com"\nclient_id = "hoop"\n', "oidc.issuer", "https://"),
        (BASE + 'algorithms = ["HS256"]', "oidc.algorithms", "never none or HS*"),
        (BASE + 'algorithms = ["none"]', "oidc.algorithms", "never none or HS*"),
        (BASE + 'clock_skew = "5m"', "oidc.clock_skew", "between 0 and 60 seconds"),
        (BASE + 'scopes = "openid"', "oidc.scopes", "list of non-empty strings"),
        (BASE + "typo = 1", "oidc.typo", "unknown key"),
    ],
)
def test_oidc_settings_that_would_weaken_verification_are_refused(
    tmp_path: Path, extra: str, key: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(config(tmp_path, extra))
    assert caught.value.key == key and problem in caught.value.problem


def test_http_is_accepted_for_a_loopback_issuer_only(tmp_path: Path) -> None:
    loaded = load_config(config(tmp_path, 'issuer = "http://127.0.0.1:9000/"\nclient_id = "h"'))
    assert loaded.oidc is not None and loaded.oidc.issuer == "http://127.0.0.1:9000"


def test_agents_are_named_once_and_default_to_strict(tmp_path: Path) -> None:
    agents = '[[agents]]\nname = "ci-bot"\nowner = "alice"\n'
    loaded = load_config(config(tmp_path, BASE + 'audience = "urn:gw"\n', agents))
    agent = loaded.agents["ci-bot"]
    assert (agent.client_id, agent.shell_mode, agent.max_session) == ("ci-bot", "strict", 3600)
    assert loaded.shell_mode("ci-bot", frozenset(), "web1") == "strict"
    with pytest.raises(ConfigError, match="listed twice"):
        other = '[[agents]]\nname = "other"\nclient_id = "ci-bot"\nowner = "bob"\n'
        load_config(config(tmp_path, BASE + 'audience = "urn:gw"\n', agents + other))
    with pytest.raises(ConfigError, match="owner"):
        load_config(config(tmp_path, BASE + 'audience = "urn:gw"\n', '[[agents]]\nname = "x"\n'))


def _start(interval: float = 5) -> DeviceStart:
    return DeviceStart.parse(
        {
            "device_code": "d",
            "user_code": "ABCD-EFGH",
            "verification_uri": "https://idp/device",
            "expires_in": 60,
            "interval": interval,
        }
    )


def test_the_device_flow_polls_at_the_providers_pace_and_slows_down_when_told() -> None:
    poll = DevicePoll.begin(_start(interval=5), now=0.0)
    assert poll.next_wait(0.0) == 5
    assert poll.answer(400, {"error": "authorization_pending"}) is None
    assert poll.next_wait(5.0) == 5
    assert poll.answer(400, {"error": "slow_down"}) is None
    assert poll.next_wait(10.0) == 10  # five seconds more after each slow_down
    assert poll.answer(200, {"access_token": "a", "id_token": "i"}) == {
        "access_token": "a",
        "id_token": "i",
    }
    assert poll.next_wait(58.0) == 2  # never past the code's expiry
    with pytest.raises(DeviceFlowFailed, match="expired"):
        poll.next_wait(60.0)


@pytest.mark.parametrize(
    ("error", "message"),
    [
        ("access_denied", "declined"),
        ("expired_token", "expired"),
        ("invalid_grant", "refused"),
    ],
)
def test_the_device_flow_ends_with_a_reason(error: str, message: str) -> None:
    poll = DevicePoll.begin(_start(), now=0.0)
    with pytest.raises(DeviceFlowFailed, match=message):
        poll.answer(400, {"error": error})


@pytest.mark.programs
def test_policy_check_judges_an_agent_as_the_gateway_would(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = config(
        tmp_path,
        BASE + 'audience = "urn:gw"\n',
        '[[agents]]\nname = "ci-bot"\nowner = "alice"\n\n[[targets]]\nname = "db"\n'
        'protocol = "postgres"\nhost = "127.0.0.1"\nport = 5432\ndatabase = "x"\nuser = "x"\n'
        'groups = ["*"]\n',
    )
    done = subprocess.run(
        [
            *(sys.executable, "-m", "hoop_tui", "policy", "check", "--config", str(path)),
            *("--user", "ci-bot", "--target", "db", "--sql", "insert into t values (1)"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3, done.stderr  # review
    assert "an agent's writes are held" in done.stdout
    assert "ci-bot (agent of alice, client ci-bot)" in done.stdout


def test_agents_need_an_audience_that_is_not_the_gateways_client_id(tmp_path: Path) -> None:
    agents = '[[agents]]\nname = "ci-bot"\nowner = "alice"\n'
    for oidc in (BASE, BASE + 'audience = "hoop"\n'):
        with pytest.raises(ConfigError) as caught:
            load_config(config(tmp_path, oidc, agents))
        assert caught.value.key == "oidc.audience"
