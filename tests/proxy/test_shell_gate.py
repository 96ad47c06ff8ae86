"""The shell gate in front of a real bash in a pseudo-terminal: what the user sees and what
the shell runs when a line is allowed, denied, held and approved, or withdrawn."""

from __future__ import annotations

import asyncio
import itertools
import os
import pty
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.holds.enforcement import Outcome
from proxy.line_detector import LineDetector
from proxy.policy import Action, Basis, Review, Verdict
from proxy.shell_gate import GuardGate

pytestmark = pytest.mark.programs

ALLOW = Verdict(Action.ALLOW, Basis.DEFAULT, "")


def _verdict_for(text: str) -> Verdict:
    if "rm -rf" in text:
        return Verdict(Action.DENY, Basis.RULE, "recursive delete", rule="no-rm", command=text)
    if "restart" in text:
        return Verdict(
            Action.REVIEW,
            Basis.RULE,
            "",
            rule="review-restarts",
            command=text,
            review=Review(("oncall",), 1, 600),
        )
    return ALLOW


class Bash:
    """A real bash on a PTY, with the gate between the keyboard and it."""

    def __init__(self, tmp_path: Path, decide_hold: asyncio.Queue[bool]) -> None:
        self.seen = bytearray()
        self.lines: list[str] = []
        self.decisions = decide_hold
        env = {
            "PATH": os.environ["PATH"],
            "TERM": "xterm",
            "HOME": str(tmp_path),
            "PS1": "$ ",
            "INPUTRC": "/dev/null",
        }
        self.pid, self.master = pty.fork()
        if self.pid == 0:
            os.chdir(tmp_path)
            os.execvpe("bash", ["bash", "--norc", "--noprofile", "-i"], env)
        os.set_blocking(self.master, False)
        self.gate = GuardGate(
            LineDetector(80),
            decide=self._decide,
            enforce=self._enforce,
            to_target=lambda data: os.write(self.master, data),
            to_caller=self.seen.extend,
        )
        asyncio.get_running_loop().add_reader(self.master, self._readable)

    def _decide(self, line):
        self.lines.append(line.text)
        return _verdict_for(line.text)

    async def _enforce(self, command, verdict, notify):
        if verdict.action is Action.DENY:
            return Outcome(False, f"denied: {verdict.describe()}")
        if verdict.action is Action.REVIEW:
            notify("held as h-test by rule review-restarts")
            approved = await self.decisions.get()
            return Outcome(approved, "h-test approved by bob" if approved else "h-test denied")
        return Outcome(True)

    def _readable(self) -> None:
        try:
            data = os.read(self.master, 65536)
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self.master)
            return
        self.gate.output(data)
        self.seen.extend(data)

    async def type(self, data: bytes, settle: float = 0.3) -> None:
        self.gate.input(data)
        await asyncio.sleep(settle)

    async def wait_for(self, text: bytes, timeout: float = 5) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            assert time.monotonic() < deadline, f"{text!r} not in {bytes(self.seen)!r}"
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.master)
        await self.gate.close()
        os.close(self.master)
        os.kill(self.pid, 9)
        os.waitpid(self.pid, 0)


@pytest.fixture
async def bash(tmp_path):
    shell = Bash(tmp_path, asyncio.Queue())
    await shell.wait_for(b"$ ")
    yield shell
    await shell.close()


async def test_an_allowed_line_runs(bash, tmp_path):
    await bash.type(b"echo made > ok.txt\r")
    await bash.wait_for(b"$ ", timeout=5)
    assert bash.lines == ["echo made > ok.txt"]
    assert (tmp_path / "ok.txt").read_text() == "made\n"


async def test_a_denied_line_never_runs_and_says_why(bash, tmp_path):
    (tmp_path / "keep").mkdir()
    await bash.type(b"rm -rf keep\r")
    await bash.wait_for(b"[hoop] denied: deny by rule no-rm: rm -rf keep (recursive delete)")
    await bash.type(b"echo after\r")
    await bash.wait_for(b"after\r\n")
    assert (tmp_path / "keep").is_dir()
    assert bash.lines == ["rm -rf keep", "echo after"]


async def test_the_line_judged_is_the_edited_one(bash, tmp_path):
    """Typed `echo rm -rf x`, then Home and Ctrl-D x5 deleting 'echo ': the screen shows
    `rm -rf x`, which is what bash would run, and what the gate judges."""
    (tmp_path / "x").mkdir()
    await bash.type(b"echo rm -rf x")
    await bash.type(b"\x01\x04\x04\x04\x04\x04")
    await bash.type(b"\r")
    await bash.wait_for(b"[hoop] denied")
    assert bash.lines == ["rm -rf x"]
    assert (tmp_path / "x").is_dir()


async def test_a_held_line_waits_then_runs_when_approved(bash, tmp_path):
    await bash.type(b"touch restart.done\r")
    await bash.wait_for(b"held as h-test")
    await asyncio.sleep(0.3)
    assert not (tmp_path / "restart.done").exists()
    await bash.type(b"echo typed-while-held\r", settle=0.1)
    assert b"typed-while-held\r\n" not in bash.seen
    await bash.decisions.put(True)
    await bash.wait_for(b"typed-while-held\r\n")
    assert (tmp_path / "restart.done").exists()
    assert bash.lines == ["touch restart.done", "echo typed-while-held"]


async def test_ctrl_c_withdraws_a_held_line(bash, tmp_path):
    await bash.type(b"touch restart.done\r")
    await bash.wait_for(b"held as h-test")
    await bash.type(b"\x03")
    await bash.wait_for(b"[hoop] request withdrawn (Ctrl-C)")
    await asyncio.sleep(0.2)
    assert not (tmp_path / "restart.done").exists()
    await bash.type(b"echo still-usable\r")
    await bash.wait_for(b"still-usable\r\n")


async def test_a_bracketed_paste_is_judged_whole_before_any_of_it_is_forwarded(bash, tmp_path):
    (tmp_path / "keep").mkdir()
    await bash.type(b"\x1b[200~touch pasted.txt\nrm -rf keep\n\x1b[201~")
    await bash.wait_for(b"[hoop] denied")
    await asyncio.sleep(0.2)
    assert not (tmp_path / "pasted.txt").exists()
    assert (tmp_path / "keep").is_dir()


async def test_an_unbracketed_multi_line_paste_is_refused_whole_if_one_line_is_denied(
    bash, tmp_path
):
    (tmp_path / "keep").mkdir()
    await bash.type(b"touch first.txt\rrm -rf keep\rtouch third.txt\r", settle=1.0)
    await bash.wait_for(b"[hoop] denied")
    assert (tmp_path / "keep").is_dir()
    assert not (tmp_path / "first.txt").exists()
    assert not (tmp_path / "third.txt").exists()
    assert bash.lines == ["touch first.txt\nrm -rf keep\ntouch third.txt"]


async def test_an_allowed_multi_line_paste_runs_every_line(bash, tmp_path):
    await bash.type(b"touch first.txt\rtouch second.txt\r", settle=1.0)
    await bash.wait_for(b"$ ")
    assert (tmp_path / "first.txt").exists() and (tmp_path / "second.txt").exists()
    assert bash.lines == [
        "touch first.txt\ntouch second.txt",
        "touch first.txt",
        "touch second.txt",
    ]


# -- what ran is what was judged, whatever the keys ------------------------------------------

KEYS = {
    "left": b"\x1b[D",
    "right": b"\x1b[C",
    "home": b"\x01",
    "end": b"\x05",
    "backspace": b"\x7f",
    "delete": b"\x04",
    "kill-line": b"\x0b",
    "kill-start": b"\x15",
    "kill-word": b"\x17",
    "yank": b"\x19",
    "transpose": b"\x14",
    "word-back": b"\x1bb",
    "word-forward": b"\x1bf",
    "insert-comment": b"\x1b#",
    "uncomment": b"\x1b1\x1b#",
    "enter": b"\r",
    "ctrl-j": b"\n",
}
_key = st.one_of(
    st.sampled_from(sorted(KEYS)).map(KEYS.__getitem__),
    st.text(alphabet="abz #", min_size=1, max_size=6).map(str.encode),
)


class Recorded(Bash):
    """The gate's bash, where every line bash accepts is appended to `ran.log` (history), and
    the gate allows every certain line except those holding `zz`."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.judged: list[str] = []
        self.denied: list[str] = []
        super().__init__(tmp_path, asyncio.Queue())

    def _decide(self, line):
        if not line.certain or "zz" in line.text:
            self.denied.append(line.text)
            return Verdict(Action.DENY, Basis.RULE, "no", rule="no-zz", command=line.text)
        self.judged.append(line.text)
        return ALLOW


def _ran(tmp_path: Path) -> list[str]:
    log = tmp_path / "ran.log"
    if not log.exists():
        return []
    return [line for line in log.read_text().splitlines() if not line.startswith("#")]


async def _type_and_compare(tmp_path: Path, writes: list[bytes], gaps: list[bool]) -> None:
    shell = Recorded(tmp_path)
    try:
        await shell.wait_for(b"$ ")
        setup = b"set +H; HISTCONTROL=; PROMPT_COMMAND='history -a ran.log'\r"
        await shell.type(setup, settle=0.3)
        (tmp_path / "ran.log").write_text("")
        for data, gap in zip(writes, gaps, strict=True):
            await shell.type(data, settle=0.05 if gap else 0.0)
        await shell.type(b"\x15", settle=0.8)  # empties a line left unfinished; nothing runs
        judged = {text.rstrip() for text in shell.judged}
        for ran in _ran(tmp_path):
            assert ran.rstrip() in judged, (ran, shell.judged, shell.denied, bytes(shell.seen))
    finally:
        await shell.close()


@settings(max_examples=25, deadline=None)
@given(
    keys=st.lists(_key, min_size=1, max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=12), max_size=4),
    gaps=st.lists(st.booleans(), min_size=13, max_size=13),
)
def test_what_ran_is_what_was_judged_or_nothing_ran(
    tmp_path_factory: pytest.TempPathFactory, keys: list[bytes], cuts: list[int], gaps: list[bool]
) -> None:
    """Editing keys, text, Enter and readline's other accepting keys, cut into writes anywhere
    (a whole line and its Enter in one write among them), sent with and without a pause: every
    line bash ran is a line the gate judged and allowed."""
    bounds = sorted({0, len(keys), *(c for c in cuts if c < len(keys))})
    writes = [b"".join(keys[a:b]) for a, b in itertools.pairwise(bounds)]
    writes = [w for w in writes if w]
    tmp_path = tmp_path_factory.mktemp("keys")
    asyncio.run(_type_and_compare(tmp_path, writes, gaps[: len(writes)]))
