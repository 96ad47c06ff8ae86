"""The bridge of one session channel: caller <-> gateway <-> target, every byte recorded.

`CallerChannel` is the asyncssh server session the caller talks to; when the caller asks for a
shell, a command or a subsystem it opens the same on the target (`TargetChannel`) with the same
terminal, allowed environment and size, then relays both ways. Each byte is recorded before it
is forwarded. Flow control is end to end: when one side's send buffer fills, the other side's
reading pauses, so a slow caller slows the target down instead of filling the gateway's memory.

The exec command is recorded as its own event before the target sees it; this is also where the
command inspection of the policy engine plugs in (`ChannelInspector`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Protocol, cast

import asyncssh

from proxy.shell import terminal_reads_commands
from proxy.ssh.file_gate import SftpFileGate
from proxy.ssh.link import RecordingUnavailable, TargetLink
from proxy.ssh.output_masking import OutputMasking
from proxy.ssh.scp import Direction, ScpObserver
from proxy.ssh.sftp import FileOperation, SftpObserver
from proxy.ssh.strict import StrictShell
from proxy.ssh.upstream import TargetUnavailable
from storage.masking import MaskAct

log = logging.getLogger("hoop.ssh")

# Why a request still being judged or held is withdrawn when its caller's channel goes away:
# the cancellation carries it to the hold, and `hoop-tui holds --all` shows it.
CALLER_GONE = "the caller disconnected"

# Let the target send big packets: fewer packets to decrypt per byte relayed.
TARGET_WINDOW = 8 * 1024 * 1024
TARGET_PACKET = 256 * 1024

SIGNALS = {
    "HUP": 1,
    "INT": 2,
    "QUIT": 3,
    "ILL": 4,
    "ABRT": 6,
    "FPE": 8,
    "KILL": 9,
    "USR1": 10,
    "SEGV": 11,
    "USR2": 12,
    "PIPE": 13,
    "ALRM": 14,
    "TERM": 15,
}


class ChannelInspector(Protocol):
    """Decides whether an exec command may run (the policy engine plugs in here).

    `check_exec` returns None to let the command run, or the line to show on the caller's
    stderr when it may not; while it waits (a hold), `notify` shows progress to the caller.
    `terminal` says whether the exec has a PTY (what is typed into it then meets the gate).
    An inspector may also offer `shell_gate(link, channel, columns, to_target=, to_caller=)`,
    returning a `ShellGate` that judges each line of an interactive shell at Enter.
    """

    async def check_exec(
        self,
        link: TargetLink,
        channel: int,
        command: str,
        notify: Callable[[str], None] = ...,
        *,
        terminal: bool = False,
    ) -> str | None: ...


class ShellGate(Protocol):
    """Sits between the caller's keys and the target for one PTY shell (see proxy/shell_gate)."""

    def input(self, data: bytes) -> None: ...

    def output(self, data: bytes) -> None: ...

    async def close(self) -> None: ...


class AllowAll:
    async def check_exec(
        self,
        link: TargetLink,
        channel: int,
        command: str,
        notify: Callable[[str], None] = lambda text: None,
        *,
        terminal: bool = False,
    ) -> str | None:
        return None


class CallerChannel(asyncssh.SSHServerSession):  # type: ignore[type-arg]
    """A session channel from the caller, bridged to a session channel on the target."""

    def __init__(self, link: TargetLink, inspector: ChannelInspector | None = None) -> None:
        self.link = link
        self.inspector = inspector or AllowAll()
        self.chan: asyncssh.SSHServerChannel[bytes] | None = None
        self.target: asyncssh.SSHClientChannel[bytes] | None = None
        self.number = -1
        self.kind = ""
        self.command: str | None = None
        self.subsystem: str | None = None
        self.term_type = ""
        self.term_size: tuple[int, int, int, int] = (0, 0, 0, 0)
        self.term_modes: Mapping[int, int] = {}
        self.sftp: SftpObserver | None = None
        self.file_gate: SftpFileGate | None = None  # SFTP requests judged by `files` rules
        self.scp: ScpObserver | None = None
        self.early: list[tuple[bytes, int | None]] = []
        self.early_eof = False
        self.gate: ShellGate | None = None
        self.masking: OutputMasking | None = None  # the caller's masks on what is printed
        self.paused_by: set[str] = set()  # why the caller's channel is not being read
        self.target_paused_by: set[str] = set()  # why the target's channel is not being read
        self.closed = False  # the caller's channel is gone
        self.ending = False  # we have started closing the caller's channel
        self._closed_event = asyncio.Event()
        self._starting: asyncio.Task[None] | None = None

    # -- requests from the caller, before the session starts ---------------------------------

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self.chan = chan

    def pty_requested(
        self, term_type: str, term_size: tuple[int, int, int, int], term_modes: Mapping[int, int]
    ) -> bool:
        self.term_type, self.term_size, self.term_modes = term_type, term_size, term_modes
        return True

    def shell_requested(self) -> bool:
        self.kind = "shell"
        return True

    def exec_requested(self, command: str) -> bool:
        self.kind, self.command = "exec", command
        self.scp = ScpObserver.for_command(command)
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        if subsystem != "sftp":
            return False
        self.kind, self.subsystem = "subsystem", subsystem
        self.sftp = SftpObserver()
        check_file = getattr(self.inspector, "check_file", None)
        if check_file is not None:
            self.file_gate = SftpFileGate(
                lambda request, notify: check_file(self.link, self.number, request, notify),
                to_target=self._gate_to_target,
                to_caller=self._sftp_reply,
                notify=lambda text: self._notify(text.rstrip() + "\r\n"),
                pause=lambda paused: (
                    self._pause("sftp-judging") if paused else self._resume("sftp-judging")
                ),
                fail=self._fail,
                spawn=self.link.spawn,
            )
        return True

    def session_started(self) -> None:
        # asyncssh resumes reading right after this returns; data that comes before the target
        # is ready is kept in `early` and pauses the channel (see data_received).
        self.paused_by.add("starting")
        self._starting = self.link.spawn(self._start())

    # -- opening the target side ---------------------------------------------------------------

    async def _start(self) -> None:
        """Open the target side once the upstream login and the recording are there and the
        request has been judged; then relay what the caller sent meanwhile."""
        upstream = await _record_opening(self)
        if upstream is None:
            return
        identity = self.link.identity
        strict = (
            self.link.config.shell_mode(identity.name, identity.groups, self.link.target.name)
            == "strict"
        )
        if not await _judge_request(self, strict):
            return
        strict_shell = strict and self.kind == "shell" and bool(self.term_type)
        target_chan = await _open_target(self, upstream, strict_shell)
        if target_chan is None:
            return
        self.target = target_chan
        if self.closed:
            target_chan.close()
            return
        if self.target_paused_by:
            target_chan.pause_reading()
        self._start_masking()
        if not strict_shell:
            _start_gate(self)
        early, self.early = self.early, []
        for data, datatype in early:
            self._forward_input(data, datatype)
        if self.early_eof:
            target_chan.write_eof()
        self._resume("starting")

    @property
    def writable(self) -> bool:
        return self.chan is not None and not self.closed and not self.ending

    def _notify(self, text: str) -> None:
        """A progress line for the caller (for example a held command's ticking wait)."""
        if self.writable:
            assert self.chan is not None
            self.link.session.record_output(self.number, text.encode())
            with contextlib.suppress(BrokenPipeError):
                self.chan.write_stderr(text.encode())

    def _gate_to_target(self, data: bytes) -> None:
        if self.target is not None:
            self.target.write(data)

    def _gate_to_caller(self, data: bytes) -> None:
        if self.writable and self.link.session.record_output(self.number, data):
            assert self.chan is not None
            with contextlib.suppress(BrokenPipeError):
                self.chan.write(data)

    def _fail(self, message: str, status: int = 255) -> None:
        """Tell the caller why on stderr and end the channel with `status`."""
        if not self.writable:
            return
        assert self.chan is not None
        self.ending = True
        text = message.rstrip() + "\r\n"
        if self.number >= 0:
            self.link.session.record_output(self.number, text.encode())
        with contextlib.suppress(BrokenPipeError):  # the caller may be closing at this moment
            self.chan.write_stderr(text.encode())
            self.chan.exit(status)

    # -- caller -> target ----------------------------------------------------------------------

    def data_received(self, data: bytes, datatype: int | None) -> None:
        if self.target is None:
            self.early.append((data, datatype))
            if self.chan is not None:
                self.chan.pause_reading()
            return
        self._forward_input(data, datatype)

    def _forward_input(self, data: bytes, datatype: int | None) -> None:
        assert self.target is not None
        if not self.link.session.record_input(self.number, data):
            return
        self.link.touch()
        if self.sftp is not None:
            self._file_operations(self.sftp.client_data(data))
            if self.file_gate is not None:
                self.file_gate.client_data(data)  # forwards it, holding requests until judged
                return
        elif self.scp is not None and self.scp.direction is Direction.UPLOAD:
            self._file_operations(self.scp.feed(data))
        if self.gate is not None:
            self.gate.input(data)  # the gate forwards it, holding an Enter until judged
        else:
            self.target.write(data)

    def eof_received(self) -> bool:
        if self.target is None:
            self.early_eof = True
        else:
            self.target.write_eof()
        return True

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        self.term_size = (width, height, pixwidth, pixheight)
        if self.target is not None and self.link.session.record_resize(self.number, width, height):
            self.target.change_terminal_size(width, height, pixwidth, pixheight)

    def signal_received(self, signal: str) -> None:
        if self.target is not None and self.link.session.record_signal(self.number, signal):
            self.target.send_signal(signal)

    def break_received(self, msec: int) -> bool:
        if self.target is not None and self.link.session.record_signal(self.number, "BREAK"):
            self.target.send_break(msec)
            return True
        return False

    # -- flow control ----------------------------------------------------------------------------

    def pause_writing(self) -> None:
        self._pause_target("caller-full")

    def resume_writing(self) -> None:
        self._resume_target("caller-full")

    def pause_for_recording(self, paused: bool) -> None:
        """The recorder is behind (or has caught up): stop (or restart) reading both sides."""
        if paused:
            self._pause("recorder")
            self._pause_target("recorder")
        else:
            self._resume("recorder")
            self._resume_target("recorder")

    def _pause_target(self, reason: str) -> None:
        if not self.target_paused_by and self.target is not None:
            self.target.pause_reading()
        self.target_paused_by.add(reason)
        if self.masking is not None:  # the quiet that follows is ours, not the program's
            self.masking.cancel_quiet_flush()

    def _resume_target(self, reason: str) -> None:
        self.target_paused_by.discard(reason)
        if not self.target_paused_by and self.target is not None:
            self.target.resume_reading()
            if self.masking is not None:
                self.masking.arm_quiet_flush()

    def _pause(self, reason: str) -> None:
        if not self.paused_by and self.chan is not None:
            self.chan.pause_reading()
        self.paused_by.add(reason)

    def _resume(self, reason: str) -> None:
        self.paused_by.discard(reason)
        if not self.paused_by and self.chan is not None and not self.closed:
            self.chan.resume_reading()

    # -- target -> caller ------------------------------------------------------------------------

    def _start_masking(self) -> None:
        """Mask secrets in what a shell or command prints (proxy/ssh/output_masking); an SFTP
        channel's packets are left as they are."""
        make = getattr(self.inspector, "output_masker", None)
        masker = make(self.link) if make is not None else None
        if masker is not None and self.sftp is None:
            self.masking = OutputMasking(
                masker, self.command, self._deliver, lambda: bool(self.target_paused_by)
            )

    def _masked(self, data: bytes, datatype: int | None) -> None:
        assert self.masking is not None
        if self.gate is not None:  # the gate reads what the shell drew, never masked text
            self.gate.output(data)
        self.masking.feed(data, datatype)

    def _deliver(self, out: bytes, acts: list[MaskAct], datatype: int | None) -> bool:
        """Masked output: the masking acts, then the output, recorded and forwarded; False
        when the output was not delivered."""
        if not self.writable:
            return False
        assert self.chan is not None
        for act in acts:
            if not self.link.session.record_mask(
                self.number, act.rule, act.position, act.length, act.token
            ):
                return False
        if not out or not self.link.session.record_output(self.number, out):
            return False
        self.link.touch()
        with contextlib.suppress(BrokenPipeError):
            self.chan.write(out, datatype)
        return True

    def _end_masking(self) -> None:
        """The output ended: what the sniffer or the mask streams held goes out (masked)."""
        masking = self.masking
        if masking is None:
            return
        held = masking.end_sniff()
        if held and self.writable:
            self._masked(held, None)
        masking.flush(final=True)

    def target_data(self, data: bytes, datatype: int | None) -> None:
        if not self.writable:
            return
        assert self.chan is not None
        masking = self.masking
        if masking is not None and masking.sniffer is not None and not datatype:
            data = masking.sniff(data)
            if not data:
                return
        if masking is not None and masking.applies(datatype):
            self._masked(data, datatype)
            return
        if not self.link.session.record_output(self.number, data):
            return
        self.link.touch()
        if self.sftp is not None:
            self._file_operations(self.sftp.target_data(data))
        elif self.scp is not None and self.scp.direction is Direction.DOWNLOAD and not datatype:
            self._file_operations(self.scp.feed(data))
        with contextlib.suppress(BrokenPipeError):
            self.chan.write(data, datatype)
        if self.file_gate is not None and not datatype:
            self.file_gate.target_data(data)  # a refusal waiting for a reply's end goes now
        if self.gate is not None:
            self.gate.output(data)

    def target_eof(self) -> None:
        self._end_masking()
        if self.writable:
            assert self.chan is not None
            with contextlib.suppress(BrokenPipeError):
                self.chan.write_eof()

    def target_closed(
        self,
        status: int | None,
        signal: tuple[str, bool, str, str] | None,
        exc: Exception | None = None,
    ) -> None:
        """The target ended the channel: pass on how (exit status or signal) and close."""
        self._end_masking()
        self.target = None
        self._close_gate()
        if exc is not None and status is None and signal is None:
            self._fail(f"hoop: connection to {self.link.target.name} lost: {exc}")
            return
        if not self.writable:
            return
        assert self.chan is not None
        self.ending = True
        self._finish_file_operations("session ended")
        if signal is not None:
            name, core_dumped, message, lang = signal
            self.link.session.record_exit_status(self.number, 128 + SIGNALS.get(name, 0))
            self.link.session.record_signal(self.number, f"exit-signal {name}")
            self.chan.exit_with_signal(name, core_dumped, message, lang)
        elif status is not None:
            self.link.session.record_exit_status(self.number, status)
            self.chan.exit(status)
        else:
            self.chan.close()

    def _sftp_reply(self, packet: bytes) -> None:
        """A reply the gateway makes itself (a refused request), recorded like the target's."""
        if self.sftp is not None:
            self._file_operations(self.sftp.target_data(packet))
        self._gate_to_caller(packet)

    def _finish_file_operations(self, reason: str) -> None:
        if self.sftp is not None:
            self._file_operations(self.sftp.finish(reason))
        if self.scp is not None:
            self._file_operations(self.scp.finish())

    def _file_operations(self, operations: list[FileOperation]) -> None:
        for op in operations:
            self.link.session.record_file_transfer(self.number, op.op, op.path, op.size, op.detail)

    # -- the end -----------------------------------------------------------------------------

    def shut_down(self, message: str) -> None:
        """The link is ending: say why, then close both sides of this channel."""
        if message:
            self._fail(message)
        elif self.writable:
            assert self.chan is not None
            self.ending = True
            self.chan.close()
        if self.target is not None:
            self.target.close()

    async def wait_closed(self) -> None:
        await self._closed_event.wait()

    def _close_gate(self) -> None:
        if self.gate is not None:
            gate, self.gate = self.gate, None
            self.link.spawn(gate.close())

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._closed_event.set()
        if self._starting is not None and not self._starting.done():
            # Nobody is left to run it for: a held request is withdrawn now, not at expiry.
            self._starting.cancel(CALLER_GONE)
        if self.file_gate is not None:
            self.file_gate.close(CALLER_GONE)
        self._close_gate()
        if self.target is not None:
            self.target.close()
            self.target = None
        if self.number >= 0:
            self._finish_file_operations("channel closed")
            self.link.session.record_channel_close(self.number)
            self.link.remove_channel(self.number)


# -- opening the target side of a CallerChannel, step by step -----------------------------------


async def _record_opening(channel: CallerChannel) -> asyncssh.SSHClientConnection | None:
    """The upstream connection once the channel's opening is recorded; None when the
    caller has been told why not (target down, no recording) or has gone."""
    try:
        upstream = await channel.link.ready()
    except TargetUnavailable as exc:
        channel._fail(f"hoop: {exc}")
        return None
    cols, rows = channel.term_size[:2]
    try:
        await channel.link.start_recording(channel.term_type, cols, rows)
    except RecordingUnavailable as exc:
        # a reason meant for the caller (the recording spool is full) is told; others
        # name paths and stay in the gateway's log
        why = getattr(exc.__cause__, "public_reason", None)
        channel._fail(
            "hoop: the session cannot be recorded, so the gateway refuses it"
            + (f": {why}" if why else "")
        )
        return None
    if channel.closed or channel.link.ended:
        return None
    channel.number = channel.link.add_channel(channel)
    detail = channel.kind if channel.subsystem is None else f"subsystem {channel.subsystem}"
    if channel.term_type:
        detail += f" pty {channel.term_type} {cols}x{rows}"
    if not channel.link.session.record_channel_open(channel.number, "session", detail):
        return None
    return upstream


async def _judge_request(channel: CallerChannel, strict: bool) -> bool:
    """Record and judge an exec command (or a shell without a terminal); False when it may
    not run (the caller has been told why)."""
    refusal: str | None = None
    if channel.command is not None:
        if not channel.link.session.record_exec(channel.number, channel.command.encode()):
            return False
        check_strict_exec = getattr(channel.inspector, "check_strict_exec", None)
        if strict and channel.term_type and check_strict_exec is not None:
            refusal = await check_strict_exec(
                channel.link, channel.number, channel.command, notify=channel._notify
            )
        else:
            refusal = await channel.inspector.check_exec(
                channel.link,
                channel.number,
                channel.command,
                notify=channel._notify,
                terminal=bool(channel.term_type),
            )
    check_blind_shell = getattr(channel.inspector, "check_shell_without_terminal", None)
    if refusal is None and channel.kind == "shell" and not channel.term_type and check_blind_shell:
        refusal = await check_blind_shell(channel.link, channel.number, notify=channel._notify)
    if refusal is not None:
        channel._fail(refusal, status=126)
        return False
    return True


async def _open_target(
    channel: CallerChannel, upstream: asyncssh.SSHClientConnection, strict_shell: bool
) -> asyncssh.SSHClientChannel[bytes] | None:
    """The same session on the target (a strict shell: the gateway's line editor, each
    line its own exec, proxy/ssh/strict); None when the target refused it."""
    assert channel.chan is not None
    env: dict[str | bytes, str | bytes] = {
        key: value
        for key, value in channel.chan.get_environment().items()
        if channel.link.config.ssh.env_allowed(key)
    }
    if strict_shell:
        check = getattr(channel.inspector, "check_strict_line", None)
        number = channel.number

        async def check_line(line: str, notify: Callable[[str], None]) -> str | None:
            assert check is not None
            result: str | None = await check(channel.link, number, line, notify)
            return result

        shell = StrictShell(channel, upstream, env, check_line if check else None)
        return cast("asyncssh.SSHClientChannel[bytes]", shell)
    try:
        target_chan, _ = await upstream.create_session(
            lambda: TargetChannel(channel),
            command=channel.command,
            subsystem=channel.subsystem,
            env=env,
            term_type=channel.term_type or None,
            term_size=channel.term_size if channel.term_type else None,
            term_modes=channel.term_modes if channel.term_type else None,
            encoding=None,
            window=TARGET_WINDOW,
            max_pktsize=TARGET_PACKET,
        )
    except (asyncssh.ChannelOpenError, asyncssh.Error, OSError) as exc:
        reason = getattr(exc, "reason", "") or str(exc)
        channel._fail(f"hoop: target {channel.link.target.name} refused the session: {reason}")
        return None
    return target_chan


def _start_gate(channel: CallerChannel) -> None:
    """Lines typed into a shell are judged at Enter: a login shell's, and just as well
    those of an exec request with a terminal whose program may read commands (`ssh -t
    host bash`, `sudo -i`, `script`, `rbash`, a renamed bash, a REPL), which would
    otherwise meet no rule after the exec string itself was judged. Only programs known
    not to read commands (`top`, `tail -f`) go ungated."""
    make_gate = getattr(channel.inspector, "shell_gate", None)
    typed_into_a_shell = channel.kind == "shell" or (
        channel.kind == "exec" and terminal_reads_commands(channel.command or "")
    )
    if typed_into_a_shell and channel.term_type and make_gate is not None:
        channel.gate = make_gate(
            channel.link,
            channel.number,
            channel.term_size[0] or 80,
            to_target=channel._gate_to_target,
            to_caller=channel._gate_to_caller,
        )


class TargetChannel(asyncssh.SSHClientSession):  # type: ignore[type-arg]
    """The target end of a bridged session channel; it reports everything to its caller side."""

    def __init__(self, caller: CallerChannel) -> None:
        self.caller = caller
        self.chan: asyncssh.SSHClientChannel[bytes] | None = None
        self.status: int | None = None
        self.signal: tuple[str, bool, str, str] | None = None

    def connection_made(self, chan: asyncssh.SSHClientChannel[bytes]) -> None:
        self.chan = chan

    def data_received(self, data: bytes, datatype: int | None) -> None:
        self.caller.target_data(data, datatype)

    def eof_received(self) -> bool:
        self.caller.target_eof()
        return True

    def exit_status_received(self, status: int) -> None:
        self.status = status

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        self.signal = (signal, core_dumped, msg, lang)

    def pause_writing(self) -> None:
        self.caller._pause("target-full")

    def resume_writing(self) -> None:
        self.caller._resume("target-full")

    def connection_lost(self, exc: Exception | None) -> None:
        self.caller.target_closed(self.status, self.signal, exc)
