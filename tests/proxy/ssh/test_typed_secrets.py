"""Recordings never hold a typed secret (issue 12, class 13), through a real `ssh`: a password
typed at `read -s -p 'Password: '` is stored as `[redacted]`; card numbers and e-mail addresses
typed into a shell, or sent as an exec request, are masked in `input`, `command` and `exec`
events like output is; keys typed at a prompt that does echo them are kept."""

from __future__ import annotations

import asyncio
import os
import pty
import re
import time

import pytest

from proxy.recording import REDACTED, TypedSecrets
from storage.schema import EventType
from tests.fixtures.gateway import GatewayHarness, only_recording

pytestmark = pytest.mark.timeout(90)

CARD = "4111 1111 1111 1111"
EMAIL = "alice.smith@example.com"
PASSWORD = "hunter2-Sup3rSecret"
PROMPT = re.compile(rb"[#$] $")


async def start(harness: GatewayHarness) -> None:
    harness.add_user("alice", groups=("dev",))
    harness.add_target("t1")
    harness.masks.append({"name": "cards", "detector": "credit_card", "style": "last4"})
    harness.masks.append({"name": "emails", "detector": "email"})
    await harness.start_runtime()


def everything_recorded(recorded) -> bytes:
    """Every field of every event, as bytes: a secret must be in none of them."""
    parts = []
    for event in recorded.events:
        for value in event.fields.values():
            if isinstance(value, bytes):
                parts.append(value)
            elif value is not None:
                parts.append(str(value).encode())
    return b"\n".join(parts)


class Terminal:
    """A real `ssh -tt` in a pseudo-terminal, typed into key by key."""

    def __init__(self, harness: GatewayHarness, *command: str) -> None:
        argv = ["ssh", *harness.ssh_args("alice"), "-tt", "-p", str(harness.port)]
        argv += ["alice+t1@127.0.0.1", *command]
        self.pid, self.master = pty.fork()
        if self.pid == 0:
            os.environ.update(harness.env(None))
            os.execvp("ssh", argv)
        os.set_blocking(self.master, False)
        self.seen = bytearray()

    async def until(self, pattern: re.Pattern[bytes] | bytes, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not (
            pattern.search(bytes(self.seen))
            if isinstance(pattern, re.Pattern)
            else pattern in self.seen
        ):
            assert time.monotonic() < deadline, f"{pattern!r} not in {bytes(self.seen)[-300:]!r}"
            try:
                self.seen += os.read(self.master, 65536)
            except BlockingIOError:
                await asyncio.sleep(0.02)

    async def type(self, text: str) -> None:
        for char in text:
            os.write(self.master, char.encode())
            await asyncio.sleep(0.01)

    def close(self) -> None:
        for _ in range(100):
            done, _ = os.waitpid(self.pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.05)
        else:
            os.kill(self.pid, 9)
            os.waitpid(self.pid, 0)
        os.close(self.master)


GETPASS = "python3 -c \"import getpass; p = getpass.getpass('Password: '); print('got', len(p))\""


async def test_a_password_typed_at_a_silent_prompt_is_stored_redacted(
    harness: GatewayHarness,
) -> None:
    """getpass turns the terminal's echo off, as `read -s`, sudo and ssh-keygen do."""
    await start(harness)
    terminal = Terminal(harness, GETPASS)
    try:
        await terminal.until(b"Password: ")
        await terminal.type(PASSWORD + "\r")
        await terminal.until(f"got {len(PASSWORD)}".encode())
    finally:
        terminal.close()
    recorded = await only_recording(harness)
    assert PASSWORD.encode() not in everything_recorded(recorded)
    assert REDACTED in recorded.input()


async def test_card_numbers_and_emails_typed_into_a_shell_are_masked_in_input_and_command(
    harness: GatewayHarness,
) -> None:
    await start(harness)
    terminal = Terminal(harness)
    try:
        await terminal.until(PROMPT)
        await terminal.type(f"true {CARD} {EMAIL}\r")
        terminal.seen.clear()
        await terminal.until(PROMPT)
        await terminal.type("exit\r")
    finally:
        terminal.close()
    recorded = await only_recording(harness)
    typed = recorded.input()
    assert CARD.encode() not in typed and EMAIL.encode() not in typed
    assert b"1111" in typed  # last4 keeps the card's end, so the input is still readable
    for event in recorded.of("command"):
        assert CARD not in event["command"] and EMAIL not in event["command"]


async def test_an_exec_requests_secrets_are_masked_in_exec_and_command_events(
    harness: GatewayHarness,
) -> None:
    await start(harness)
    result = await harness.ssh_direct("alice+t1", f"echo {CARD} {EMAIL} > /dev/null; echo ok")
    assert result.out == "ok\n"
    recorded = await only_recording(harness)
    (exec_event,) = recorded.of("exec")
    assert CARD.encode() not in exec_event["command"]
    assert EMAIL.encode() not in exec_event["command"]
    assert b"echo" in exec_event["command"]
    for event in recorded.of("command"):
        assert CARD not in event["command"] and EMAIL not in event["command"]
    everything = everything_recorded(recorded)
    assert CARD.encode() not in everything and EMAIL.encode() not in everything


def test_keys_the_output_echoes_after_a_prompt_like_line_are_kept() -> None:
    """`Token name: ` that does echo what is typed: not a secret, so kept (masked as usual)."""
    secrets = TypedSecrets(None)
    out = secrets(EventType.OUTPUT, (0, b"Token name: "))
    assert out == [(EventType.OUTPUT, (0, b"Token name: "))]
    assert secrets(EventType.INPUT, (0, b"m")) == []
    released = secrets(EventType.OUTPUT, (0, b"m"))
    assert released[0] == (EventType.INPUT, (0, b"m"))
    assert secrets(EventType.INPUT, (0, b"y\r")) == [(EventType.INPUT, (0, b"y\r"))]


def test_a_silent_answer_is_redacted_whatever_its_length_and_split() -> None:
    secrets = TypedSecrets(None)
    secrets(EventType.OUTPUT, (0, b"[sudo] password for alice: "))
    recorded = []
    for key in [b"s", b"3", b"cr", b"et\r", b"ls\r"]:
        recorded += secrets(EventType.INPUT, (0, key))
    assert recorded == [
        (EventType.INPUT, (0, REDACTED)),
        (EventType.INPUT, (0, b"\r")),
        (EventType.INPUT, (0, b"ls\r")),
    ]
    secrets(EventType.OUTPUT, (0, b"Enter passphrase (empty for no passphrase): "))
    secrets(EventType.INPUT, (0, b"never-ended"))
    assert secrets(EventType.CHANNEL_CLOSE, (0,)) == [
        (EventType.INPUT, (0, REDACTED)),
        (EventType.CHANNEL_CLOSE, (0,)),
    ]


def test_a_silent_answer_repeated_before_the_next_line_is_redacted_there_too() -> None:
    """Under load the guard once judged a password typed at `read -s` as a command line: its
    refusal notice and the COMMAND event repeated the answer into the recording and the live
    watch. What repeats the last silent answer, until the caller's next line, is redacted."""
    secrets = TypedSecrets(None)
    secrets(EventType.OUTPUT, (0, b"Password: "))
    assert secrets(EventType.INPUT, (0, b"hunter2-Sup3rSecret\r")) == [
        (EventType.INPUT, (0, REDACTED)),
        (EventType.INPUT, (0, b"\r")),
    ]
    (command,) = secrets(EventType.COMMAND, (0, "guard", "hunter2-Sup3rSecret"))
    assert command == (EventType.COMMAND, (0, "guard", "[redacted]"))
    notice = b"\r\ndenied: review: hunter2-Sup3rSecret: it needs review\r\n"
    (output,) = secrets(EventType.OUTPUT, (0, notice))
    assert output == (EventType.OUTPUT, (0, notice.replace(b"hunter2-Sup3rSecret", REDACTED)))
    # the caller's next line: its output is the target's own again
    assert secrets(EventType.INPUT, (0, b"echo hunter2-Sup3rSecret\r")) == [
        (EventType.INPUT, (0, b"echo hunter2-Sup3rSecret\r"))
    ]
    later = (0, b"hunter2-Sup3rSecret\r\n")
    assert secrets(EventType.OUTPUT, later) == [(EventType.OUTPUT, later)]


def test_a_short_silent_answer_is_not_hunted_in_the_output() -> None:
    secrets = TypedSecrets(None)
    secrets(EventType.OUTPUT, (0, b"PIN: "))
    secrets(EventType.INPUT, (0, b"y\r"))
    out = (0, b"yes, every y stays\r\n")
    assert secrets(EventType.OUTPUT, out) == [(EventType.OUTPUT, out)]
