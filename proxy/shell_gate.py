"""The gate on an interactive shell: every Enter waits here until the line it submits is judged.

Input from the caller goes through the line detector (which reads the line off the screen);
keys other than Enter pass straight through. On Enter the line is decided and then:

- allowed: the Enter goes on to the target;
- denied: the Enter is dropped, the caller sees a one-line reason, the shell's line is cleared;
- held: the Enter waits while the caller sees the hold's id and a ticking wait; Ctrl-C
  withdraws the request. Approved, the Enter goes on; otherwise the reason and a clear line.

Input typed while a line is being judged is queued, never forwarded early. Messages the gate
shows are written to the caller and recorded as output, so replay shows what the user saw.

An Enter is judged only once the screen shows every key typed before it (the detector checks
plain text exactly; after editing keys the output must also have gone quiet); if the echo does
not come within `ECHO_WAIT_S`, the line is uncertain and gets the policy's `unparsable` action.
Keys readline accepts a line with besides Enter (`ESC #`, `C-x C-e`, ...) are judged the same
way. The alternate screen switches judging off only after an allowed line that starts a known
full-screen program (`FULL_SCREEN_PROGRAMS`); anything else drawing it is judged as the shell.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
from collections.abc import Awaitable, Callable

from proxy.holds.enforcement import HoldNotice, Outcome
from proxy.line_detector import OPAQUE_KEYS, CommandLine, Enter, Forward, LineDetector, Paste
from proxy.policy import Action, Caller, Policy, Verdict, decide_command_line, decide_unseen
from proxy.shell import ShellAnalysis, SimpleCommand, analyse_line

# End of line, then kill back to its start: readline's way to empty the line.
CLEAR_LINE = b"\x05\x15"
CTRL_C = b"\x03"
ECHO_WAIT_S = 1.0  # how long to wait for the terminal to show keys; then the line is uncertain
PROMPT_WAIT_S = 0.5  # how long typed-ahead keys wait for the shell's answer to an Enter
QUIET_S = 0.03
LONG_LINE = 1024  # characters; longer lines are parsed on a worker thread
TICK_S = 1.0

# Programs that draw on the alternate screen and read keys that are not shell commands. Only
# a line that is one of these, alone, lets the alternate screen switch judging off.
FULL_SCREEN_PROGRAMS = frozenset(
    {
        "vi", "vim", "nvim", "view", "vimdiff", "nano", "pico", "emacs", "mg", "less", "more",
        "most", "man", "top", "htop", "btop", "atop", "iotop", "iftop", "nmon", "tig", "mc",
        "ncdu", "journalctl", "systemctl", "git",
    }
)  # fmt: skip


def starts_full_screen(line: str) -> bool:
    """Whether `line` is one simple command running a known full-screen program."""
    result = analyse_line(line)
    if not isinstance(result, ShellAnalysis) or len(result.commands) != 1:
        return False
    return result.commands[0].program in FULL_SCREEN_PROGRAMS


# Commands that change how readline turns keys into a line, so that keys the gate reads as
# editing could accept a line it never judged (`bind '"\C-t": accept-line'`, `set -o vi`), or
# that run text nobody typed at the prompt (`fc`, `history -s` then a recall, an editor
# assignment for C-x C-e, an alias whose text a later line runs unseen). Under guard they are
# their own class, held like an opaque command.
_EDITOR_VARIABLES = re.compile(r"(?<![${\w])(INPUTRC|VISUAL|EDITOR|FCEDIT)\b")
_EDITOR_PROGRAMS = frozenset({"bind", "fc"})
_STTY_QUERIES = frozenset({"-a", "--all", "-g", "--save", "size", "speed"})
_OPTION_SETTERS = frozenset({"set", "bash", "sh", "rbash", "dash", "ksh", "zsh"})
_SAFE_SET_OPTIONS = frozenset(
    {"errexit", "nounset", "pipefail", "xtrace", "verbose", "noclobber", "noglob", "notify"}
)


def changes_line_editor(text: str) -> str | None:
    """Why the line would change the line editor (or history) under the gate, or None."""
    if _EDITOR_VARIABLES.search(text):
        return "it may set a variable that changes the line editor (INPUTRC, VISUAL, EDITOR)"
    result = analyse_line(text)
    if not isinstance(result, ShellAnalysis):
        return None  # unparsable lines get the unparsable action anyway
    for command in result.commands:
        why = _editor_command(command)
        if why is not None:
            return why
    return None


def _editor_command(command: SimpleCommand) -> str | None:
    name = command.program
    words = [word.text if word.known else "\0" for word in command.argv[1:]]
    if name in _EDITOR_PROGRAMS:
        return f"{name} changes the line editor or runs commands from history"
    if name == "alias" and any("=" in w or "\0" in w for w in words):
        return "an alias makes later lines run text other than they show"
    if name == "stty" and any(w not in _STTY_QUERIES for w in words):
        return "stty changes how the terminal echoes keys, and the gate reads the echo"
    if name == "history" and any(w.startswith("-") and set(w) & set("rsn\0") for w in words):
        return "history -r/-s/-n puts lines into history that were never typed at the prompt"
    if name in _OPTION_SETTERS:  # `set -o vi`, and a new shell started with it (`bash -o vi`)
        for index, word in enumerate(words):
            if word[:1] in "-+" and not word.startswith("--") and "o" in word:
                option = word.split("o", 1)[1] or (words[index + 1 : index + 2] or [""])[0]
                if option and option not in _SAFE_SET_OPTIONS:  # `set -o` alone lists them
                    shown = option if option != "\0" else "(an expansion)"
                    return f"set -o {shown} may change the line editor (vi mode)"
    return None


def decide_guard_line(
    policy: Policy, caller: Caller, target: str, line: CommandLine
) -> Verdict | None:
    """The verdict for a line read off the screen in guard mode: the policy's, made stricter
    where guard cannot see what would run: a key that accepts text nobody can read
    (`OPAQUE_KEYS`), and commands that change the line editor (`changes_line_editor`)."""
    if line.key in OPAQUE_KEYS:
        hidden = f"readline's {line.key} runs text the gateway cannot read off the screen"
        return decide_unseen(policy, caller, target, f"{line.key}: {line.text}", hidden)
    verdict = decide_command_line(policy, caller, target, line)
    if verdict is None or verdict.action is Action.DENY or not line.certain:
        return verdict
    why = changes_line_editor(line.text)
    if why is None:
        return verdict
    unseen = decide_unseen(policy, caller, target, line.text, why)
    return unseen if unseen.action.severity > verdict.action.severity else verdict


def uncommented(line: CommandLine) -> CommandLine:
    """`ESC #` with a numeric argument removes the leading `#` and runs the line: judge that."""
    return dataclasses.replace(line, text=line.text.removeprefix("#"))


Decide = Callable[[CommandLine], Verdict | None]  # pure: it may run on a worker thread
Enforce = Callable[[str, Verdict, Callable[[str], None]], Awaitable[Outcome]]


class GuardGate:
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
        now = asyncio.get_running_loop().time()
        for event in self.detector.feed_input(data, now):
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
        key = line.key
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ECHO_WAIT_S
        while not line.certain and line.echoed and loop.time() < deadline:
            self._output_seen.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._output_seen.wait(), 0.05)
            line = self.detector.current_line()
        if line.certain and not self.detector.exact and not line.full_screen:
            await self._quiet(deadline)  # editing keys: let their whole answer arrive
            line = self.detector.current_line()
        if not line.certain:
            line = self.detector.current_line(settled=True)
        return dataclasses.replace(line, key=key) if key else line

    async def _quiet(self, deadline: float) -> None:
        """Wait until no output arrived for `QUIET_S` (or until `deadline`)."""
        loop = asyncio.get_running_loop()
        while loop.time() < deadline:
            self._output_seen.clear()
            try:
                await asyncio.wait_for(self._output_seen.wait(), QUIET_S)
            except TimeoutError:
                return

    async def _verdict(self, line: CommandLine) -> Verdict | None:
        """Parse and decide; a long line (a big paste) is parsed off the event loop."""
        if len(line.text) > LONG_LINE:
            return await asyncio.to_thread(self._decide, line)
        return self._decide(line)

    async def _judge_enter(self, event: Enter) -> bool:
        """Judge one Enter; True when it ended a paste that is refused whole."""
        line = await self._settled_line(event.line)
        if line.key == "insert-comment":
            line = uncommented(line)
        if event.paste and await self._paste_denied(line, event):
            return True
        verdict = await self._verdict(line)
        allowed = verdict is None or await self._carry_out(line.text, verdict)
        self._output_seen.clear()
        if allowed:
            self._to_target(event.data)
        elif line.key:  # the key is dropped and the line emptied: nothing was accepted
            self._to_target(CLEAR_LINE)
            self.detector.line_cleared()
            if event.rest or not self._queue.empty():
                await self._await_answer()
            return False
        else:
            self._to_target(CLEAR_LINE + event.data)
        full_screen = allowed and (
            line.key in OPAQUE_KEYS
            or (line.certain and not line.key and starts_full_screen(line.text))
        )
        self.detector.line_finished(full_screen=full_screen)
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
        """A held line's status, redrawn every second: the time left while it waits for an
        approver, else the time it has waited."""
        if isinstance(text, HoldNotice):
            minutes, secs = divmod(max(0, text.timeout_s - seconds), 60)
            shown = f"{text.waiting} ({minutes}:{secs:02d} left; Ctrl-C withdraws)"
        else:
            minutes, secs = divmod(seconds, 60)
            shown = f"{text} ({minutes}:{secs:02d}; Ctrl-C withdraws)"
        self._to_caller(f"\x1b7  [hoop] {shown}\x1b8".encode())

    async def _tick(self, status: list[str]) -> None:
        seconds = 0
        while True:
            await asyncio.sleep(TICK_S)
            seconds += 1
            self._show_status(status[-1], seconds)
