"""Strict shell mode: the gateway is the shell's line editor, and every line is its own exec.

A caller's shell request on a strict target opens no shell on the target. The gateway edits
the line itself (proxy/line_editor.py), judges the accepted text, and runs exactly that text in
a fresh exec channel with a terminal: `cd <cwd>`, the carried exported variables and `$?`, then
the line. The channel's own open and exit mark the command's life, so no output the caller or
the command prints can fake where a command ends or what the next prompt is. While a command
runs, keys, window changes and signals go to it (Ctrl-C reaches it through its terminal).

After the command a trap writes the new working directory and environment to a file only the
gateway knows the name of (never to the terminal), and a second short exec reads and removes
it. That file is writable by the target user, as anything on the target is: a command could
change what is carried to the next line, but only a command that was judged and allowed, and
which could as well change the user's own startup files.

`StrictShell` stands where `CallerChannel` keeps its target channel, so recording, output
masking and flow control are the bridge's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import shlex
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Protocol

import asyncssh

from proxy.line_editor import Accept, Echo, Eof, Interrupt, LineEditor

if TYPE_CHECKING:
    from proxy.ssh.link import TargetLink


class CallerSide(Protocol):
    """What a strict shell uses of the caller's channel (`proxy.ssh.channels.CallerChannel`,
    which imports this module: the channel is described here, not imported)."""

    link: TargetLink
    number: int
    term_type: str
    term_size: tuple[int, int, int, int]
    term_modes: Mapping[int, int]

    def target_data(self, data: bytes, datatype: int | None) -> None: ...

    def target_closed(
        self,
        status: int | None,
        signal: tuple[str, bool, str, str] | None,
        exc: Exception | None = None,
    ) -> None: ...

    def _pause(self, reason: str) -> None: ...

    def _resume(self, reason: str) -> None: ...

    def _fail(self, message: str, status: int = 255) -> None: ...


# The verdict of one line: None to run it, else the line to show why not.
CheckLine = Callable[[str, Callable[[str], None]], Awaitable[str | None]]

STATE_FILE = ".hoop-strict-"
# The first prompt's directory; and state files an earlier session left (it ended while a
# command ran) are removed once an hour old.
PROBE = (
    "printf '%s' \"$PWD\"; find ~ -maxdepth 1 -name '.hoop-strict-*' -mmin +60"
    " -exec rm -f {} + 2>/dev/null"
)
NOT_CARRIED = frozenset({"_", "SHLVL", "PWD", "OLDPWD", "SSH_TTY", "TERM", "LINES", "COLUMNS"})
VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
CTRL_C = b"\x03"
DENIED_STATUS = 126


def wrapped_line(
    line: str, *, cwd: str, exports: dict[str, str], unset: set[str], status: int, token: str
) -> str:
    """The exec command that runs `line` where the previous line left off, and has a trap
    report the new directory and environment to the state file `token` names."""
    state = f"~/{STATE_FILE}{token}"
    parts = ["cd -- " + shlex.quote(cwd) + " 2>/dev/null || cd"] if cwd else []
    parts += [f"unset {name}" for name in sorted(unset) if VARIABLE_NAME.match(name)]
    parts += [
        f"export {name}={shlex.quote(value)}"
        for name, value in sorted(exports.items())
        if VARIABLE_NAME.match(name)
    ]
    parts.append(
        "__hoop_state() { (umask 077; { printf '%s\\0' \"$PWD\"; env -0; } >"
        f" {state}.a) 2>/dev/null; }}"
    )
    parts.append("trap __hoop_state EXIT")
    parts.append(f"(umask 077; env -0 > {state}.b) 2>/dev/null")
    parts.append(f"__hoop_status() {{ return {status}; }}; __hoop_status")
    return "; ".join(parts) + "\n" + line


def read_state_command(token: str) -> str:
    state = f"~/{STATE_FILE}{token}"
    return (
        f"cat {state}.b 2>/dev/null; printf '\\0'; cat {state}.a 2>/dev/null;"
        f" rm -f {state}.a {state}.b"
    )


def parse_state(data: bytes) -> tuple[str, dict[str, str], dict[str, str]] | None:
    """(cwd, environment before the line, environment after it) from the state file, or None
    when the trap did not run (the line ended its shell with `exec`, or was killed)."""
    records = data.decode("utf-8", "surrogateescape").split("\0")
    if "" not in records:
        return None
    split = records.index("")
    before, after = records[:split], records[split + 1 :]
    if not after or not after[0]:
        return None

    def table(entries: list[str]) -> dict[str, str]:
        return dict(entry.split("=", 1) for entry in entries if "=" in entry)

    return after[0], table(before), table(after[1:])


class _LineChannel(asyncssh.SSHClientSession):  # type: ignore[type-arg]
    """The target end of one line's exec: output to the caller, the end to the shell."""

    def __init__(self, shell: StrictShell) -> None:
        self.shell = shell
        self.status: int | None = None
        self.signal: str | None = None
        self.ended = asyncio.Event()
        self.last = b"\n"  # the last byte the command printed

    def data_received(self, data: bytes, datatype: int | None) -> None:
        if data:
            self.last = data[-1:]
        self.shell.caller.target_data(data, datatype)

    def exit_status_received(self, status: int) -> None:
        self.status = status
        self.shell.command_ended()

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        self.signal = signal
        self.shell.command_ended()

    def pause_writing(self) -> None:
        self.shell.caller._pause("target-full")

    def resume_writing(self) -> None:
        self.shell.caller._resume("target-full")

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended.set()


class StrictShell:
    """One caller's strict shell. It takes the place of the target channel in the bridge:
    `write`, `write_eof`, `change_terminal_size`, `send_signal`, `pause_reading`, `close`."""

    def __init__(
        self,
        caller: CallerSide,
        upstream: asyncssh.SSHClientConnection,
        env: dict[str | bytes, str | bytes],
        check: CheckLine | None,
    ) -> None:
        self.caller = caller
        self.upstream = upstream
        self.env = env
        self.check = check
        self.editor = LineEditor(caller.term_size[0] or 80)
        self.cwd = ""
        self.home = ""
        self.exports: dict[str, str] = {}
        self.unset: set[str] = set()
        self.status = 0
        self.running: asyncssh.SSHClientChannel[bytes] | None = None
        self.busy = True  # until the first prompt: keys wait in `pending`
        self.pending = bytearray()
        self.eof_pending = False
        self.paused = False
        self.closed = False
        self._judging: asyncio.Task[str | None] | None = None
        self._task = caller.link.spawn(self._begin())

    # -- the bridge's side (what CallerChannel calls on its target) ------------------------------

    def write(self, data: bytes) -> None:
        if self.running is not None:
            self.running.write(data)
        elif self.busy:
            judging = self._judging
            if judging is not None and not judging.done() and CTRL_C in data:
                judging.cancel()  # Ctrl-C withdraws a held line
                data = data.replace(CTRL_C, b"", 1)
            self.pending += data
        else:
            self._edit(data)

    def write_eof(self) -> None:
        if self.running is not None:
            self.running.write_eof()
        elif self.busy or self.pending:
            self.eof_pending = True
        else:
            self._end(self.status)

    def change_terminal_size(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        self.editor.resize(width or 80)
        if self.running is not None:
            self.running.change_terminal_size(width, height, pixwidth, pixheight)

    def send_signal(self, signal: str) -> None:
        if self.running is not None:
            self.running.send_signal(signal)

    def send_break(self, msec: int) -> None:
        if self.running is not None:
            self.running.send_break(msec)

    def pause_reading(self) -> None:
        self.paused = True
        if self.running is not None:
            self.running.pause_reading()

    def resume_reading(self) -> None:
        self.paused = False
        if self.running is not None:
            self.running.resume_reading()

    def close(self) -> None:
        self.closed = True
        if self.running is not None:
            self.running.close()
        if self._judging is not None:
            self._judging.cancel()

    def command_ended(self) -> None:
        """The command has exited: keys typed from now on are for the next prompt."""
        self.running = None

    # -- the shell ------------------------------------------------------------------------------

    async def _begin(self) -> None:
        try:
            probe = await self.upstream.run(PROBE, encoding=None, timeout=30)
        except (asyncssh.Error, OSError, TimeoutError) as exc:
            self._fail(f"hoop: target {self.caller.link.target.name} refused the session: {exc}")
            return
        stdout = probe.stdout if isinstance(probe.stdout, bytes) else b""
        self.home = self.cwd = stdout.decode("utf-8", "surrogateescape")
        self._prompt()

    def _out(self, data: bytes) -> None:
        if data and not self.closed:
            self.caller.target_data(data, None)

    def _prompt_text(self) -> str:
        target = self.caller.link.target
        cwd = self.cwd
        if self.home and (cwd == self.home or cwd.startswith(self.home.rstrip("/") + "/")):
            cwd = "~" + cwd[len(self.home.rstrip("/")) :]
        status = f"[{self.status}] " if self.status else ""
        sign = "#" if target.user == "root" else "$"
        return f"{status}{target.user}@{target.name}:{cwd}{sign} "

    def _prompt(self) -> None:
        """A new prompt; then the keys typed meanwhile, and an EOF that came after them."""
        if self.closed:
            return
        self.busy = False
        for event in self.editor.start(self._prompt_text()):
            if isinstance(event, Echo):
                self._out(event.data)
        pending, self.pending = bytes(self.pending), bytearray()
        if pending:
            self._edit(pending)
        if self.eof_pending and not self.busy:
            self._end(self.status)

    def _edit(self, data: bytes) -> None:
        """Keys into the editor, one byte at a time, until a line is accepted: what follows
        it waits for the next prompt, as a terminal's type-ahead does."""
        echo = bytearray()
        for index in range(len(data)):
            for event in self.editor.feed(data[index : index + 1]):
                if isinstance(event, Echo):
                    echo += event.data
                elif isinstance(event, Interrupt):
                    self._out(bytes(echo))
                    self.status = 130
                    self.pending += data[index + 1 :]
                    self._prompt()
                    return
                elif isinstance(event, Eof):
                    self._out(bytes(echo))
                    self._end(self.status)
                    return
                elif isinstance(event, Accept):
                    self._out(bytes(echo))
                    self.busy = True
                    self.pending += data[index + 1 :]
                    self.caller.link.spawn(self._line(event.line))
                    return
        self._out(bytes(echo))

    async def _line(self, line: str) -> None:
        if not line.strip():
            self._prompt()
            return
        ending = _exit_status(line, self.status)
        if ending is not None:
            self.caller.link.session.record_command(self.caller.number, "shell", line)
            self._end(ending)
            return
        refusal = await self._judge(line)
        if self.closed:
            return
        if refusal is not None:
            self._out(f"[hoop] {refusal}\r\n".encode())
            self.status = DENIED_STATUS
            self._prompt()
            return
        await self._run(line)
        if not self.closed:
            self._prompt()

    async def _judge(self, line: str) -> str | None:
        if self.check is None:
            self.caller.link.session.record_command(self.caller.number, "shell", line)
            return None

        def notify(text: str) -> None:
            self._out(f"[hoop] {text} (Ctrl-C withdraws)\r\n".encode())

        self._judging = asyncio.ensure_future(self.check(line, notify))
        try:
            return await self._judging
        except asyncio.CancelledError:
            if self.closed:
                raise
            return "request withdrawn (Ctrl-C)"
        finally:
            self._judging = None

    async def _run(self, line: str) -> None:
        token = secrets.token_hex(12)
        command = wrapped_line(
            line,
            cwd=self.cwd,
            exports=self.exports,
            unset=self.unset,
            status=self.status,
            token=token,
        )
        caller = self.caller
        session = _LineChannel(self)
        try:
            chan, _ = await self.upstream.create_session(
                lambda: session,
                command=command,
                env=self.env,
                term_type=caller.term_type or "xterm",
                term_size=caller.term_size,
                term_modes=caller.term_modes,
                encoding=None,
            )
        except (asyncssh.Error, OSError) as exc:
            self._out(f"[hoop] the target refused the command: {exc}\r\n".encode())
            self.status = 255
            return
        self.running = chan
        if self.paused:
            chan.pause_reading()
        # Keys that came before the command started (the rest of a paste, type-ahead) wait for
        # the next prompt: each of their lines meets the gate on its own.
        await session.ended.wait()
        self.running = None
        if session.signal is not None:
            self.status = 128 + _SIGNALS.get(session.signal, 0)
        else:
            self.status = session.status if session.status is not None else 255
        if self.closed:
            return
        if self.status > 128 and session.last != b"\n":
            self._out(b"\r\n")  # as bash after an interrupted command: the prompt on its own line
        with contextlib.suppress(asyncssh.Error, OSError, TimeoutError):
            result = await self.upstream.run(read_state_command(token), encoding=None, timeout=30)
            state = parse_state(result.stdout if isinstance(result.stdout, bytes) else b"")
            if state is not None:
                self._carry(*state)

    def _carry(self, cwd: str, before: dict[str, str], after: dict[str, str]) -> None:
        """Keep what the line changed: its directory, and exported variables it set or unset."""
        self.cwd = cwd
        for name, value in after.items():
            if name not in NOT_CARRIED and before.get(name) != value:
                self.exports[name] = value
                self.unset.discard(name)
        for name in before:
            if name not in after and name not in NOT_CARRIED:
                self.exports.pop(name, None)
                self.unset.add(name)

    def _end(self, status: int) -> None:
        if self.closed:
            return
        self.busy = True
        self.caller.target_closed(status, None)
        self.closed = True

    def _fail(self, message: str) -> None:
        self.closed = True
        self.caller._fail(message)


def _exit_status(line: str, status: int) -> int | None:
    """`exit`, `exit N` or `logout` end the strict shell with that status; None otherwise."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return None
    if not words or words[0] not in ("exit", "logout") or len(words) > 2:
        return None
    if len(words) == 2:
        return int(words[1]) & 0xFF if words[1].isdigit() else None
    return status


_SIGNALS = {"HUP": 1, "INT": 2, "QUIT": 3, "KILL": 9, "PIPE": 13, "ALRM": 14, "TERM": 15}
