"""Webhook notifications against a real HTTP server on loopback, fed by a real approval
service and control socket (issue 17: an approver learns of a hold without watching a screen)."""

from __future__ import annotations

import asyncio
import getpass
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import proxy.notify as notify_module
from proxy.config import ConfigError
from proxy.holds.broker import ApprovalBroker, Person
from proxy.holds.control import ControlClient, ControlServer, socket_path
from proxy.holds.service import ApprovalService
from proxy.notify import Endpoint, Notifier, parse_notify
from storage.sqlite_state import SqliteState
from storage.state import HoldStatus

BOB = Person("bob", frozenset({"oncall"}))


class Hook:
    """An HTTP endpoint that records what it is sent; it may fail or stall first."""

    def __init__(self, *, fail_first: int = 0, stall_s: float = 0.0) -> None:
        self.received: list[dict[str, object]] = []
        self.fail_first = fail_first
        self.stall_s = stall_s
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                payload = json.loads(self.rfile.read(length))
                time.sleep(hook.stall_s)
                if hook.fail_first > 0:
                    hook.fail_first -= 1
                    self.send_response(500)
                else:
                    hook.received.append(payload)
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T0KEN"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
async def gateway(tmp_path):
    control = ControlServer(socket_path(tmp_path), {getpass.getuser(): BOB}.get)
    approvals = ApprovalService(ApprovalBroker(SqliteState.in_data_dir(tmp_path), "gw"), control)
    await control.start()
    await approvals.start()
    notifiers: list[Notifier] = []

    def add(*endpoints: Endpoint, **options: Any) -> Notifier:
        notifier = Notifier(control, endpoints, **options)
        notifier.start()
        notifiers.append(notifier)
        return notifier

    approvals.add_notifier = add  # type: ignore[attr-defined]
    yield approvals
    for notifier in notifiers:
        await notifier.stop()
    await approvals.stop()
    await control.stop()


async def _held(service, **request):
    """Hold a command and wait for its outcome, as a held session does."""
    return await service.wait_for(await service.request_hold(**request))


def _hold(service, command="systemctl restart nginx", timeout_s=600):
    return asyncio.ensure_future(
        _held(
            service,
            session_id="s1",
            user="alice",
            target="web1",
            command=command,
            rule="restarts",
            approvers=["oncall"],
            approvals=1,
            timeout_s=timeout_s,
        )
    )


async def _until(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never met"
        await asyncio.sleep(0.02)


def endpoint(url: str, **fields: object) -> Endpoint:
    (found,) = parse_notify({"notify": [{"url": url, **fields}]}, "gateway.toml")
    return found


async def test_a_hold_raised_and_decided_reach_json_and_slack_endpoints(gateway):
    generic, slack = Hook(), Hook()
    try:
        gateway.add_notifier(endpoint(generic.url), endpoint(slack.url, format="slack"))
        waiting = _hold(gateway)
        await _until(lambda: len(generic.received) == 1 and len(slack.received) == 1)
        raised = generic.received[0]
        assert raised["event"] == "hold.raised"
        assert raised["data"]["command"] == "systemctl restart nginx"
        assert raised["data"]["user"] == "alice"
        assert "systemctl restart nginx" in slack.received[0]["text"]
        assert set(slack.received[0]) == {"text"}
        (hold,) = await gateway.broker.pending_holds()
        await gateway.decide_hold(hold.id, BOB, approve=True, reason="ok")
        assert (await waiting).status is HoldStatus.APPROVED
        await _until(lambda: len(generic.received) == 2 and len(slack.received) == 2)
        assert generic.received[1]["event"] == "hold.decided"
        assert generic.received[1]["data"]["status"] == "approved"
        assert "approved by bob" in slack.received[1]["text"]
    finally:
        generic.close()
        slack.close()


async def test_a_failing_endpoint_is_retried_with_backoff(gateway, monkeypatch):
    monkeypatch.setattr(notify_module, "BACKOFF_FIRST_S", 0.05)
    hook = Hook(fail_first=2)
    try:
        gateway.add_notifier(endpoint(hook.url, retries=3))
        waiting = _hold(gateway)
        await _until(lambda: len(hook.received) == 1)
        assert hook.received[0]["event"] == "hold.raised"
        waiting.cancel()
    finally:
        hook.close()


async def test_a_delivery_that_fails_for_good_is_shown_to_operators(gateway, tmp_path):
    """No endpoint listens: after its retries the failure is pushed on the control socket,
    where the workstation shows it; the URL's path (a token) is never in the message."""
    dead = Hook()
    dead.close()
    client = await ControlClient.connect(socket_path(tmp_path))
    try:
        await client.call("subscribe", topics=["notify"])
        notifier = gateway.add_notifier(endpoint(dead.url, retries=0, timeout=1))
        waiting = _hold(gateway)
        message = await asyncio.wait_for(anext(client.events()), 10)
        assert message["event"] == "notify.failed"
        assert "hold.raised" in message["data"]["message"]
        assert "T0KEN" not in message["data"]["message"]
        assert notifier.failures == 1
        waiting.cancel()
    finally:
        await client.close()


async def test_a_stalled_endpoint_never_slows_a_hold_or_a_decision(gateway):
    hook = Hook(stall_s=3)
    try:
        gateway.add_notifier(endpoint(hook.url))
        started = time.monotonic()
        waiting = _hold(gateway)
        while not await gateway.broker.pending_holds():
            await asyncio.sleep(0.02)
        (hold,) = await gateway.broker.pending_holds()
        await gateway.decide_hold(hold.id, BOB, approve=False, reason="no")
        assert (await waiting).status is HoldStatus.DENIED
        assert time.monotonic() - started < 1.0
    finally:
        hook.close()


async def test_a_hold_about_to_expire_and_expired_are_both_sent(gateway):
    hook = Hook()
    try:
        gateway.add_notifier(endpoint(hook.url), expiring_before_s=1.0)
        waiting = _hold(gateway, timeout_s=2)
        assert (await asyncio.wait_for(waiting, 10)).status is HoldStatus.EXPIRED
        await _until(lambda: len(hook.received) == 3)
        assert [r["event"] for r in hook.received] == [
            "hold.raised",
            "hold.expiring",
            "hold.expired",
        ]
    finally:
        hook.close()


@pytest.mark.programs
@pytest.mark.parametrize(
    ("entry", "key"),
    [
        ('url = "ftp://example.invalid/x"', "notify[0].url"),
        ('url = "http://127.0.0.1:9/x"\nevents = ["hold.eaten"]', "notify[0].events"),
        ('url = "http://127.0.0.1:9/x"\nformt = "slack"', "notify[0].formt"),
        ('url_env = "HOOP_TEST_UNSET_WEBHOOK"', "notify[0].url_env"),
    ],
)
def test_gateway_check_refuses_a_broken_notify_entry(tmp_path: Path, entry: str, key: str):
    config = tmp_path / "gateway.toml"
    config.write_text(f'[gateway]\ndata_dir = "d"\n\n[[notify]]\n{entry}\n')
    result = subprocess.run(
        [sys.executable, "-m", "hoop_tui", "gateway", "--check", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith(f"hoop-tui: {config}: {key}: ")


def test_parse_notify_refuses_both_url_forms():
    with pytest.raises(ConfigError) as caught:
        parse_notify({"notify": [{"url": "http://x/", "url_env": "X"}]}, "gateway.toml")
    assert "exactly one of url and url_env" in str(caught.value)


def test_two_entries_may_not_share_a_name():
    entries = [{"name": "chat", "url": "http://a/"}, {"name": "chat", "url": "http://b/"}]
    with pytest.raises(ConfigError) as caught:
        parse_notify({"notify": entries}, "gateway.toml")
    assert caught.value.key == "notify[1].name"


async def test_a_secret_in_a_held_command_is_masked_before_it_leaves(gateway):
    """The webhook is another service: a card typed into a held command reaches it masked, in
    the JSON data and in the text, with every [[masks]] rule whoever the caller."""
    from storage.masking import MaskPolicy

    masks = MaskPolicy.from_config([{"name": "cards", "detector": "credit_card"}], "gw.toml")
    everyone = masks.for_everyone()
    hook = Hook()
    try:
        gateway.add_notifier(endpoint(hook.url), mask=lambda text: everyone.mask_text(text)[0])
        waiting = _hold(gateway, command="echo 4111 1111 1111 1111 | pay")
        await _until(lambda: len(hook.received) == 1)
        sent = json.dumps(hook.received[0])
        assert "4111 1111 1111 1111" not in sent
        assert hook.received[0]["data"]["command"].startswith("echo ")
        waiting.cancel()
    finally:
        hook.close()
