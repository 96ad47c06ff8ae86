"""The gate on an interactive shell: every Enter waits here until the line it submits is judged.

Input from the caller goes through the line detector (which reads the line off the screen);
keys other than Enter pass straight through. On Enter the line is decided and then:

- allowed: the Enter goes on to the target;
- denied: the Enter is dropped, the caller sees a one-line reason, the shell's line is cleared;
- held: the Enter waits while the caller sees the hold's id and a ticking wait; Ctrl-C
  withdraws the request. Approved, the Enter goes on; otherwise the reason and a clear line.

Input typed while a line is being judged is queued, never forwarded early. Messages the gate
shows are written to the caller and recorded as output, so replay shows what the user saw.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from proxy.enforcement import Outcome
from proxy.line_detector import CommandLine, Enter, Forward, LineDetector, Paste
from proxy.policy import Action, Verdict

# End of line, then kill back to its start: readline's way to empty the line.
CLEAR_LINE = b"\x05\x15"
CTRL_C = b"\x03"
ECHO_WAIT_S = 0.25  # how long to wait for the terminal to show keys before judging anyway
PROMPT_WAIT_S = 0.5  # how long typed-ahead keys wait for the shell's answer to an Enter
QUIET_S = 0.03
LONG_LINE = 1024  # characters; longer lines are parsed on a worker thread
TICK_S = 1.0

Decide = Callable[[CommandLine], Verdict | None]  # pure: it may run on a worker thread
Enforce = Callable[[str, Verdict, Callable[[str], None]], Awaitable[Outcome]]


class ShellGate:
    """Judges each submitted line of one PTY session before the target sees its Enter."""

    def __init__(
        self,
        detector: LineDetector,
        *,
        decide: Decide,
        enforce: Enforce,
        to_target: Callable[[bytes], None],
        to_caller: Callable[[bytes], None],
    ) -> None:
        self.detector = detector
        self._decide = decide
        self._enforce = enforce
        self._to_target = to_target
        self._to_caller = to_caller
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._output_seen = asyncio.Event()
        self._judging: asyncio.Task[Outcome] | None = None
        self._worker = asyncio.ensure_future(self._work())

    # -- from the bridge -----------------------------------------------------------------------

    def output(self, data: bytes) -> None:
        """Target output, before it goes to the caller. Its arrival time lets the detector
        tell a line drawn by a background job from the user's own echo."""
        self.detector.feed_output(data, now=asyncio.get_running_loop().time())
        self._output_seen.set()

    def input(self, data: bytes) -> None:
        """Caller input. Ctrl-C while a line is held withdraws it; the rest waits its turn."""
        judging = self._judging
        if judging is not None and not judging.done() and CTRL_C in data:
            judging.cancel()
            data = data.replace(CTRL_C, b"", 1)
        if data:
            self._queue.put_nowait(data)

    async def close(self) -> None:
        self._worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._worker

    # -- the worker ----------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            await self._process(await self._queue.get())

    async def _process(self, data: bytes) -> None:
        for event in self.detector.feed_input(data):
            if isinstance(event, Forward):
                self._to_target(event.data)
            elif isinstance(event, Paste):
                await self._judge_paste(event)
            elif isinstance(event, Enter):
                paste_refused = await self._judge_enter(event)
                if event.rest and not paste_refused:
                    await self._process(event.rest)

    async def _settled_line(self, line: CommandLine) -> CommandLine:
        """Give the terminal a moment to echo keys sent just before Enter; after that, take
        the screen as settled (echo off, a password prompt) rather than wait for ever."""
        waited = 0.0
        while not line.certain and line.echoed and waited < ECHO_WAIT_S:
            self._output_seen.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._output_seen.wait(), 0.05)
            waited += 0.05
            line = self.detector.current_line()
        if not line.certain:
            line = self.detector.current_line(settled=True)
        return line

    async def _verdict(self, line: CommandLine) -> Verdict | None:
        """Parse and decide; a long line (a big paste) is parsed off the event loop."""
        if len(line.text) > LONG_LINE:
            return await asyncio.to_thread(self._decide, line)
        return self._decide(line)

    async def _judge_enter(self, event: Enter) -> bool:
        """Judge one Enter; True when it ended a paste that is refused whole."""
        line = await self._settled_line(event.line)
        if event.paste and await self._paste_denied(line, event):
            return True
        verdict = await self._verdict(line)
        allowed = verdict is None or await self._carry_out(line.text, verdict)
        self._output_seen.clear()
        self._to_target(event.data if allowed else CLEAR_LINE + event.data)
        self.detector.line_finished()
        if event.rest or not self._queue.empty():
            await self._await_answer()
        return False

    async def _paste_denied(self, line: CommandLine, event: Enter) -> bool:
        """Several lines arrived at once (a paste without bracketed-paste markers): if any of
        them would be denied, none of them is forwarded. Holds are judged line by line."""
        whole = CommandLine(f"{line.text}\n{(event.paste or '').rstrip()}", line.prompt, True)
        verdict = await self._verdict(whole)
        if verdict is None or verdict.action is not Action.DENY:
            return False
        await self._carry_out(whole.text, verdict)
        self._to_target(CLEAR_LINE + event.data)
        self.detector.line_finished()
        return True

    async def _await_answer(self) -> None:
        """Let the shell answer the Enter (a new prompt, or the command's first output) before
        keys typed ahead are read, so the next line starts where the shell puts it."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._output_seen.wait(), PROMPT_WAIT_S)
            while True:
                self._output_seen.clear()
                await asyncio.wait_for(self._output_seen.wait(), QUIET_S)

    async def _judge_paste(self, event: Paste) -> None:
        if event.full_screen:
            self._to_target(event.data)
            return
        line = CommandLine(event.combined, "", True)
        verdict = await self._verdict(line)
        if verdict is None or await self._carry_out(event.combined, verdict):
            self._to_target(event.data)

    async def _carry_out(self, command: str, verdict: Verdict) -> bool:
        """Enforce `verdict`, showing a ticking status while it is held; True to forward."""
        status: list[str] = []
        ticker: asyncio.Task[None] | None = None

        def notify(text: str) -> None:
            nonlocal ticker
            status.append(text)
            self._show_status(text, 0)
            if ticker is None:
                ticker = asyncio.ensure_future(self._tick(status))

        if verdict.action is not Action.REVIEW:  # decided at once: nothing to withdraw
            outcome = await self._enforce(command, verdict, notify)
            if not outcome.allowed:
                self._to_caller(f"\r\n[hoop] {outcome.message}\r\n".encode())
            return outcome.allowed
        self._judging = asyncio.ensure_future(self._enforce(command, verdict, notify))
        try:
            outcome = await self._judging
        except asyncio.CancelledError:
            if self._worker.cancelling():
                raise
            outcome = Outcome(False, "request withdrawn (Ctrl-C)")
        finally:
            self._judging = None
            if ticker is not None:
                ticker.cancel()
        if status:
            self._to_caller(b"\x1b8\x1b[J")  # the status may have wrapped: clear below too
        if not outcome.allowed:
            self._to_caller(f"\r\n[hoop] {outcome.message}\r\n".encode())
        elif outcome.message:
            self._to_caller(f"\x1b7 [hoop] {outcome.message}\x1b8".encode())
        return outcome.allowed

    def _show_status(self, text: str, seconds: int) -> None:
        minutes, secs = divmod(seconds, 60)
        self._to_caller(
            f"\x1b7  [hoop] {text} ({minutes}:{secs:02d}; Ctrl-C withdraws)\x1b8".encode()
        )

    async def _tick(self, status: list[str]) -> None:
        seconds = 0
        while True:
            await asyncio.sleep(TICK_S)
            seconds += 1
            self._show_status(status[-1], seconds)
