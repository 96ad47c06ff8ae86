"""Webhook notifications: an approver learns of a hold without watching a screen.

`[[notify]]` entries name an endpoint (`url`, or `url_env` for a URL that holds a token), a body
`format` (`json`: the event and the hold or grant as the control API shows them; `slack`: one
`text` line, for Slack-compatible incoming webhooks) and the `events` it wants. The notifier is an
in-process listener of the control API's events, so it sees exactly what approvers' workstations
see. It never blocks the data path: an event is queued (a full queue drops the oldest and says
so), and each endpoint has its own sender task that posts with a timeout and retries with
backoff. A delivery that fails for good is published as `notify.failed` for the workstations.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxy.config import ConfigError, parse_duration
from proxy.holds.control import ControlServer

log = logging.getLogger(__name__)

HOLDS_TOPIC = "holds"
GRANTS_TOPIC = "grants"
NOTIFY_TOPIC = "notify"  # delivery failures, for the operator's workstations
NOTIFY_EVENTS = (
    "hold.raised",
    "hold.decided",
    "hold.expiring",
    "hold.expired",
    "hold.withdrawn",
    "grant.requested",
)
FORMATS = ("json", "slack")
KEYS = frozenset({"name", "url", "url_env", "format", "events", "timeout", "retries"})
DEFAULT_EXPIRING_BEFORE_S = 120.0
DEFAULT_TIMEOUT_S = 5.0
DEFAULT_RETRIES = 4
QUEUE_LIMIT = 256
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One `[[notify]]` entry."""

    name: str
    url: str
    format: str
    events: frozenset[str]
    timeout_s: float = DEFAULT_TIMEOUT_S
    retries: int = DEFAULT_RETRIES

    @property
    def shown(self) -> str:
        """The URL without path or query, which may carry a token: for messages and logs."""
        parts = urllib.parse.urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}/…"


def parse_notify(raw: Mapping[str, Any], path: Path | str) -> tuple[Endpoint, ...]:
    """The `[[notify]]` entries of a configuration; ConfigError names the key that is wrong."""
    entries = raw.get("notify", [])
    if not isinstance(entries, list):
        raise ConfigError(path, "notify", "must be an array of tables ([[notify]])")
    found: list[Endpoint] = []
    for index, entry in enumerate(entries):
        where = f"notify[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(path, where, "must be a table")
        for key in entry:
            if key not in KEYS:
                raise ConfigError(path, f"{where}.{key}", f"unknown key (known: {_known()})")
        url = _url(entry, where, path)
        form = entry.get("format", "json")
        if form not in FORMATS:
            raise ConfigError(path, f"{where}.format", f"must be one of {', '.join(FORMATS)}")
        events = entry.get("events", list(NOTIFY_EVENTS))
        if not isinstance(events, list) or not all(e in NOTIFY_EVENTS for e in events):
            raise ConfigError(
                path, f"{where}.events", f"must be a list of: {', '.join(NOTIFY_EVENTS)}"
            )
        timeout = entry.get("timeout", DEFAULT_TIMEOUT_S)
        try:
            timeout_s = parse_duration(timeout) if isinstance(timeout, str) else float(timeout)
        except (TypeError, ValueError):
            raise ConfigError(path, f"{where}.timeout", "must be a duration like 5s") from None
        retries = entry.get("retries", DEFAULT_RETRIES)
        if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries <= 20:
            raise ConfigError(path, f"{where}.retries", "must be a whole number from 0 to 20")
        name = str(entry.get("name") or f"notify-{index}")
        if any(endpoint.name == name for endpoint in found):
            raise ConfigError(path, f"{where}.name", f"{name!r} names another entry too")
        found.append(Endpoint(name, url, form, frozenset(events), timeout_s, retries))
    return tuple(found)


def _known() -> str:
    return ", ".join(sorted(KEYS))


def _url(entry: Mapping[str, Any], where: str, path: Path | str) -> str:
    if ("url" in entry) == ("url_env" in entry):
        raise ConfigError(path, where, "needs exactly one of url and url_env")
    if "url_env" in entry:
        variable = entry["url_env"]
        url = os.environ.get(str(variable), "") if isinstance(variable, str) else ""
        if not url:
            raise ConfigError(path, f"{where}.url_env", f"${variable} is not set")
    else:
        url = entry["url"]
    parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(path, f"{where}.url", "must be an http:// or https:// URL")
    return str(url)


def describe(event: str, data: Mapping[str, Any]) -> str:
    """One line a person reads in a chat channel."""
    what = f"{data.get('user')}@{data.get('target')}"
    if event.startswith("grant."):
        target, user = data.get("target"), data.get("user")
        return f"[hoop] access to {target} requested by {user} ({data['id']})"
    command = str(data.get("command", ""))
    if event == "hold.raised":
        return f"[hoop] {data['id']} held by rule {data.get('rule')}: {what}: {command}"
    if event == "hold.expiring":
        left = max(0, int(float(data.get("expires_at", 0)) - time.time()))
        return f"[hoop] {data['id']} expires in {left} s without a decision: {what}: {command}"
    decisions = data.get("decisions") or []
    by = f" by {decisions[-1]['by']}" if decisions else ""
    return f"[hoop] {data['id']} {data.get('status')}{by}: {what}: {command}"


def body(endpoint: Endpoint, event: str, data: Mapping[str, Any]) -> bytes:
    if endpoint.format == "slack":
        return json.dumps({"text": describe(event, data)}).encode()
    return json.dumps({"event": event, "data": data, "text": describe(event, data)}).encode()


def post(endpoint: Endpoint, payload: bytes) -> None:
    """One HTTP POST (run in a worker thread); raises OSError on any failure."""
    request = urllib.request.Request(
        endpoint.url,
        data=payload,
        headers={"Content-Type": "application/json", "User-Agent": "hoop-tui"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=endpoint.timeout_s) as answer:
            answer.read(65536)
    except urllib.error.HTTPError as exc:
        raise OSError(f"HTTP {exc.code}") from None
    except urllib.error.URLError as exc:
        raise OSError(str(exc.reason)) from None


class Notifier:
    """Listens to the control API's hold and grant events and posts them to the endpoints."""

    def __init__(
        self,
        control: ControlServer,
        endpoints: tuple[Endpoint, ...],
        *,
        clock: Callable[[], float] = time.time,
        expiring_before_s: float = DEFAULT_EXPIRING_BEFORE_S,
        send: Callable[[Endpoint, bytes], None] = post,
        mask: Callable[[str], str] = lambda text: text,
    ) -> None:
        self.control = control
        self._mask = mask  # the gateway's [[masks]]: a held command may hold a typed secret
        self.endpoints = endpoints
        self.clock = clock
        self.expiring_before_s = expiring_before_s
        self._send = send
        # one queue per endpoint, by position: two entries may share a name or a URL
        self._queues = [asyncio.Queue[tuple[str, bytes]](QUEUE_LIMIT) for _ in endpoints]
        self._tasks: list[asyncio.Task[None]] = []
        self._expiring: dict[str, asyncio.TimerHandle] = {}
        self._unlisten: Callable[[], None] | None = None
        self.failures = 0

    def start(self) -> None:
        if not self.endpoints:
            return
        self._unlisten = self.control.listen(self._on_event, (HOLDS_TOPIC, GRANTS_TOPIC))
        self._tasks = [
            asyncio.ensure_future(self._sender(endpoint, queue))
            for endpoint, queue in zip(self.endpoints, self._queues, strict=True)
        ]

    async def stop(self) -> None:
        if self._unlisten is not None:
            self._unlisten()
        for timer in self._expiring.values():
            timer.cancel()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _on_event(self, topic: str, event: str, data: dict[str, Any]) -> None:
        """Called inside `publish`: decides what it is and queues it, nothing more."""
        name = self._name(topic, event, data)
        if name is None:
            return
        if name == "hold.raised":
            self._watch_expiry(data)
        elif name != "hold.expiring":
            timer = self._expiring.pop(str(data.get("id")), None)
            if timer is not None:
                timer.cancel()
        self._queue(name, data)

    @staticmethod
    def _name(topic: str, event: str, data: Mapping[str, Any]) -> str | None:
        if topic == GRANTS_TOPIC and event == "grant.requested":
            return "grant.requested"
        if topic != HOLDS_TOPIC:
            return None
        if event == "hold.created":
            return "hold.raised"
        if event != "hold.decided":
            return None
        status = data.get("status")
        return {"expired": "hold.expired", "withdrawn": "hold.withdrawn"}.get(
            str(status), "hold.decided"
        )

    def _watch_expiry(self, hold: dict[str, Any]) -> None:
        delay = float(hold["expires_at"]) - self.expiring_before_s - self.clock()
        if delay <= 0:
            return
        loop = asyncio.get_running_loop()
        self._expiring[hold["id"]] = loop.call_later(delay, self._expiring_now, hold)

    def _expiring_now(self, hold: dict[str, Any]) -> None:
        self._expiring.pop(hold["id"], None)
        self._queue("hold.expiring", hold)

    def _queue(self, name: str, data: Mapping[str, Any]) -> None:
        data = self._masked(data)
        for endpoint, queue in zip(self.endpoints, self._queues, strict=True):
            if name not in endpoint.events:
                continue
            if queue.full():  # an endpoint that is down does not hold memory forever
                queue.get_nowait()
                self._failed(endpoint, name, "queue full: the oldest notification was dropped")
            queue.put_nowait((name, body(endpoint, name, data)))

    def _masked(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """A copy whose free text (the command, reasons, notes) went through the masks before it
        leaves the gateway for another service."""
        shown = dict(data)
        for key in ("command", "reason", "note"):
            if isinstance(shown.get(key), str):
                shown[key] = self._mask(shown[key])
        if "decisions" in data:
            shown["decisions"] = [
                {**d, "reason": self._mask(str(d.get("reason", "")))} for d in data["decisions"]
            ]
        return shown

    async def _sender(self, endpoint: Endpoint, queue: asyncio.Queue[tuple[str, bytes]]) -> None:
        while True:
            name, payload = await queue.get()
            delay = BACKOFF_FIRST_S
            for attempt in range(endpoint.retries + 1):
                try:
                    await asyncio.to_thread(self._send, endpoint, payload)
                    break
                except OSError as exc:
                    if attempt == endpoint.retries:
                        self._failed(endpoint, name, f"{exc} after {attempt + 1} tries")
                        break
                    await asyncio.sleep(delay)
                    delay = min(BACKOFF_MAX_S, delay * 2)

    def _failed(self, endpoint: Endpoint, name: str, why: str) -> None:
        self.failures += 1
        message = f"notification {name} to {endpoint.name} ({endpoint.shown}) failed: {why}"
        log.warning("%s", message)
        self.control.publish(
            NOTIFY_TOPIC,
            "notify.failed",
            {"endpoint": endpoint.name, "event": name, "error": why, "message": message},
        )
