"""Strict shell mode through real `ssh -tt` and a real sshd: the gateway edits the line, judges
it, and runs exactly that text as its own exec with a terminal (proxy/ssh/strict.py)."""

from __future__ import annotations

import asyncio
import getpass
import os
import pty
import re
import sys
import time
from pathlib import Path

import pyte
import pytest

from tests.fixtures.gateway import GatewayHarness, recordings
from tests.proxy.ssh.test_channels import set_size
from tests.proxy.test_runtime import pending_hold

pytestmark = pytest.mark.timeout(90)

# A prompt, not a redraw of the line being edited (which starts after ESC [ J).
# The target account is the one running the tests (tests/fixtures/sshd.py).
PROMPT = re.compile(
    rb"(?<!\x1b\[J)(?<!\] )(?:\[\d+\] )?" + re.escape(getpass.getuser().encode()) + rb"@web1:"
)


class _Screen(pyte.Screen):  # type: ignore[misc]
    def select_graphic_rendition(self, *attrs: int, private: bool = False) -> None:
        if not private:  # vim's `CSI > 4;2 m` (modifyOtherKeys) is no colour
            super().select_graphic_rendition(*attrs)


async def start_strict(
    harness: GatewayHarness, *, strict_on: str = "target", canary: bool = True
) -> None:
    """alice (dev) on web1; `rm -rf *` and `*canary*` denied, `touch *restart*` held for bob;
    strict mode on the target, on alice or on her group."""
    harness.add_rule("no-recursive-delete", shell="rm -rf *", action="deny", message="not here")
    if canary:  # it makes every `$word` a may-match: such lines need review
        harness.add_rule("no-canary", shell="*canary*", action="deny", message="canary")
    harness.add_restart_review(**({"shell_mode": "strict"} if strict_on == "target" else {}))
    if strict_on == "user":
        harness.users[0]["shell_mode"] = "strict"
    if strict_on == "group":
        write_config = harness.write_config

        def with_groups() -> Path:
            path = write_config()
            path.write_text(
                path.read_text() + '\n[[groups]]\nname = "dev"\nshell_mode = "strict"\n'
            )
            return path

        harness.write_config = with_groups  # type: ignore[method-assign]
    harness.operators[getpass.getuser()] = "bob"
    await harness.start_runtime()


class Screen:
    """A real `ssh -tt alice+web1@gateway [COMMAND]` on a pty, read into a pyte screen."""

    def __init__(self, master: int, process: asyncio.subprocess.Process, cols: int, rows: int):
        self.master = master
        self.process = process
        self.raw = b""
        self.screen = _Screen(cols, rows)
        self.stream = pyte.ByteStream(self.screen)

    @classmethod
    async def start(
        cls, harness: GatewayHarness, *command: str, rows: int = 24, cols: int = 80
    ) -> Screen:
        master, slave = pty.openpty()
        set_size(slave, rows, cols)
        process = await asyncio.create_subprocess_exec(
            "ssh",
            *harness.ssh_args("alice"),
            "-tt",
            "-p",
            str(harness.port),
            "alice+web1@127.0.0.1",
            *command,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env={**harness.env(None), "TERM": "xterm-256color"},
            start_new_session=True,
        )
        os.close(slave)
        os.set_blocking(master, False)
        return cls(master, process, cols, rows)

    def type(self, data: str | bytes) -> None:
        """Write all of it (a pty takes a few KB at a time), reading the echo meanwhile."""
        left = data.encode() if isinstance(data, str) else data
        while left:
            try:
                left = left[os.write(self.master, left) :]
            except BlockingIOError:
                self._read()
                time.sleep(0.01)

    def _read(self) -> bool:
        try:
            chunk = os.read(self.master, 65536)
        except BlockingIOError:
            return False
        except OSError:
            return False
        self.raw += chunk
        self.stream.feed(chunk)
        return True

    @property
    def text(self) -> str:
        return "\n".join(line.rstrip() for line in self.screen.display)

    async def expect(self, needle: str | bytes, timeout: float = 15.0) -> None:
        """Wait until `needle` is in what was received (bytes) or on the screen (str)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            while self._read():
                pass
            if (needle in self.raw) if isinstance(needle, bytes) else (needle in self.text):
                return
            if loop.time() > deadline:
                raise AssertionError(
                    f"{needle!r} not seen; screen:\n{self.text}\nraw: {self.raw!r}"
                )
            await asyncio.sleep(0.02)

    async def expect_count(self, needle: bytes, count: int) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while self.raw.count(needle) < count:
            assert loop.time() < deadline, f"{needle!r} not {count} times: {self.raw!r}"
            self._read()
            await asyncio.sleep(0.02)

    async def prompt(self, count: int = 1) -> None:
        """Wait for the `count`-th prompt of the session."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while len(PROMPT.findall(self.raw)) < count:
            assert loop.time() < deadline, f"no prompt #{count}: {self.raw!r}"
            self._read()
            await asyncio.sleep(0.02)

    async def close(self) -> int:
        try:
            return await asyncio.wait_for(self.process.wait(), 15)
        finally:
            os.close(self.master)


async def test_an_allowed_line_runs_and_shows_its_output_and_status(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    await start_strict(harness, canary=False)
    term = await Screen.start(harness)
    await term.prompt()
    assert term.text.startswith(f"{getpass.getuser()}@web1:~")
    term.type("echo hello-'4'2; false\r")
    await term.expect("hello-42")
    await term.prompt(2)
    assert "[1] " in term.text.splitlines()[term.screen.cursor.y]
    term.type("echo status=$?\r")
    await term.expect("status=1")
    await term.prompt(3)  # keys sent before a command's exit are the command's
    term.type("exit 3\r")
    assert await term.close() == 3
    recorded = (await recordings(harness))[0]
    commands = [e["command"] for e in recorded.of("command")]
    assert "echo hello-'4'2; false" in commands
    assert b"hello-42" in recorded.output()


async def test_a_denied_line_does_not_run(harness: GatewayHarness, tmp_path: Path) -> None:
    await start_strict(harness)
    victim = tmp_path / "x-canary"
    victim.write_text("keep")
    keep = tmp_path / "keep"
    keep.mkdir()
    term = await Screen.start(harness)
    await term.prompt()
    # Line and Enter in one write: the gateway judges the text it holds, not a screen.
    term.type(f"rm {victim}\r")
    await term.expect("[hoop] denied")
    term.type(f"rm -rf {keep}\r")
    await term.expect("not here")
    await term.prompt(3)
    assert victim.exists() and keep.is_dir()
    term.type("\x04")
    await term.close()


async def test_a_line_split_over_writes_and_edited_is_judged_as_sent(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    """Keys in pieces, a Backspace, Ctrl-W, Ctrl-U, cursor moves and history: whatever the
    keys, the gateway judges the line it will send."""
    await start_strict(harness)
    victim = tmp_path / "x-canary"
    victim.write_text("keep")
    term = await Screen.start(harness)
    await term.prompt()
    for piece in (f"rm {tmp_path}/x-ca", "nar", "yy\x7f", "\r"):
        term.type(piece)
        await asyncio.sleep(0.05)
    await term.expect("[hoop] denied")
    await term.prompt(2)
    # Build `rm .../x-canary` out of sight of a line-start check: type the tail, go home, add rm.
    term.type(f" {victim}\x01rm\r")
    await term.prompt(3)
    term.type("echo safe\x17\x15\x1b[A\r")  # Ctrl-W, Ctrl-U, then Up: the last line again
    await term.prompt(4)
    assert victim.exists()
    assert term.raw.count(b"[hoop] denied") == 3, term.raw
    term.type("\x04")
    assert await term.close() == 126


async def test_a_held_line_waits_for_approval_and_ctrl_c_withdraws_it(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    from tests.proxy.test_runtime import BOB

    await start_strict(harness)
    first, second = tmp_path / "restart-1", tmp_path / "restart-2"
    term = await Screen.start(harness)
    await term.prompt()
    term.type(f"touch {first}\r")
    hold = await pending_hold(harness)
    await term.expect("held as")
    await asyncio.sleep(0.5)
    assert not first.exists()
    assert harness.runtime is not None
    await harness.runtime.approvals.decide_hold(hold.id, BOB, approve=True, reason="fine")
    await term.prompt(2)
    assert first.exists(), term.raw
    term.type(f"touch {second}\r")
    await pending_hold(harness)
    await term.expect_count(b"[hoop] held as", 2)
    term.type("\x03")
    await term.expect("withdrawn")
    await term.prompt(3)
    assert not second.exists()
    term.type("exit\r")
    assert await term.close() == 126


async def test_the_directory_and_exported_variables_carry_to_the_next_line(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    await start_strict(harness, canary=False)
    term = await Screen.start(harness)
    await term.prompt()
    term.type(f"cd {tmp_path} && export HOOP_X=carried HOOP_GONE=1\r")
    await term.prompt(2)
    assert f"@web1:{tmp_path}#" in term.text or f"@web1:{tmp_path}$" in term.text, term.text
    term.type("unset HOOP_GONE; pwd; echo x=$HOOP_X gone=${HOOP_GONE-unset}\r")
    await term.expect(f"{tmp_path}\r\nx=carried gone=unset".encode())
    await term.prompt(3)
    term.type("cd /nonexistent-dir\r")
    await term.prompt(4)
    term.type("pwd\r")
    await term.prompt(5)
    assert term.text.splitlines()[term.screen.cursor.y - 1] == str(tmp_path), term.text
    term.type("exit\r")
    assert await term.close() == 0


async def test_ctrl_c_interrupts_the_running_command(harness: GatewayHarness) -> None:
    await start_strict(harness)
    term = await Screen.start(harness)
    await term.prompt()
    term.type("sleep 100\r")
    await asyncio.sleep(1.0)
    started = asyncio.get_running_loop().time()
    term.type("\x03")
    await term.prompt(2)
    assert asyncio.get_running_loop().time() - started < 5
    assert "[130] " in term.text
    term.type("exit\r")
    assert await term.close() == 130


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        ("less {file}", "line 1 of the file"),
        ("vim -u NONE -N {file}", "line 1 of the file"),
        ("top -d 1", "load average"),
    ],
)
async def test_full_screen_programs_work_when_their_line_is_allowed(
    harness: GatewayHarness, tmp_path: Path, line: str, shown: str
) -> None:
    await start_strict(harness)
    file = tmp_path / "notes.txt"
    file.write_text("".join(f"line {n} of the file\n" for n in range(1, 200)))
    term = await Screen.start(harness, rows=30, cols=100)
    await term.prompt()
    term.type(line.format(file=file) + "\r")
    await term.expect(shown)
    assert term.screen.lines == 30
    term.type(":q\r" if line.startswith("vim") else "q")
    await term.prompt(2)
    term.type("stty size\r")
    await term.expect(b"30 100")
    await term.prompt(3)
    term.type("exit\r")
    assert await term.close() == 0


async def test_a_window_change_reaches_the_running_command(harness: GatewayHarness) -> None:
    await start_strict(harness)
    term = await Screen.start(harness, rows=24, cols=80)
    await term.prompt()
    term.type("sleep 2; stty size\r")
    await asyncio.sleep(1.0)
    set_size(term.master, 33, 91)
    term.process.send_signal(28)  # SIGWINCH, as a terminal emulator sends it
    await term.expect(b"33 91")
    await term.prompt(2)
    term.type("exit\r")
    await term.close()


@pytest.mark.parametrize(
    "line", ["bash", "script -q /dev/null", "python3", "sudo -i", "tmux", f"{sys.executable}"]
)
async def test_programs_that_read_further_commands_are_not_let_through(
    harness: GatewayHarness, line: str
) -> None:
    await start_strict(harness)
    term = await Screen.start(harness)
    await term.prompt()
    term.type(line + "\r")
    await term.expect("[hoop] denied")
    await term.prompt(2)
    term.type("exit\r")
    assert await term.close() == 126


@pytest.mark.parametrize("command", ["script -q /dev/null", "bash", "python3"])
async def test_an_exec_with_a_terminal_of_such_a_program_is_not_let_through(
    harness: GatewayHarness, tmp_path: Path, command: str
) -> None:
    """`ssh -tt alice+web1@gw 'script -q /dev/null'`: a shell in disguise, under strict."""
    await start_strict(harness)
    term = await Screen.start(harness, command)
    await term.expect("denied")
    assert await term.close() == 126


async def test_a_program_a_rule_names_may_run(harness: GatewayHarness) -> None:
    harness.add_rule("python-ok", shell="python3 *", action="allow")
    await start_strict(harness)
    term = await Screen.start(harness)
    await term.prompt()
    term.type("python3 -q\r")
    await term.expect(b">>> ")
    term.type("print(6 * 7)\r")
    await term.expect("42")
    term.type("\x04")
    await term.prompt(2)
    term.type("exit\r")
    assert await term.close() == 0


@pytest.mark.parametrize("bracketed", [True, False], ids=["bracketed", "plain"])
async def test_a_pasted_block_runs_line_by_line_through_the_gate(
    harness: GatewayHarness, tmp_path: Path, bracketed: bool
) -> None:
    await start_strict(harness)
    victim = tmp_path / "x-canary"
    victim.write_text("keep")
    block = f"echo one\rrm {victim}\recho three\r"
    term = await Screen.start(harness)
    await term.prompt()
    term.type(f"\x1b[200~{block}\x1b[201~" if bracketed else block)
    await term.expect(b"three\r\n")
    await term.prompt(4)
    assert victim.exists()
    assert b"one\r\n" in term.raw and b"[hoop] denied" in term.raw
    term.type("exit\r")
    await term.close()
    recorded = (await recordings(harness))[0]
    assert [e["command"] for e in recorded.of("command")] == [
        "echo one",
        f"rm {victim}",
        "echo three",
        "exit",
    ]


@pytest.mark.parametrize("strict_on", ["user", "group", "nowhere"])
async def test_strict_mode_comes_from_the_user_or_a_group(
    harness: GatewayHarness, strict_on: str
) -> None:
    """Strictest wins: alice's own entry or her group `dev` makes her shell strict; without
    either, web1 keeps guard mode. Told apart by a shell variable that is not exported: one
    shell on the target keeps it, strict lines (each its own exec) do not."""
    await start_strict(harness, strict_on=strict_on, canary=False)
    term = await Screen.start(harness)
    await asyncio.sleep(1.5)
    term.type("v=kept\r")
    await asyncio.sleep(1.0)
    term.type("echo v=$v.\r")
    await term.expect("v=kept." if strict_on == "nowhere" else "v=.")
    if strict_on != "nowhere":
        await term.prompt(3)
    term.type("exit\r")
    await term.close()


def test_shell_mode_is_checked_when_the_config_is_read(tmp_path: Path) -> None:
    from proxy.config import ConfigError, load_config

    config = tmp_path / "gateway.toml"
    base = f'[gateway]\ndata_dir = "{tmp_path}"\n'
    config.write_text(base + '[[groups]]\nname = "agents"\nshell_mode = "strict"\n')
    loaded = load_config(config)
    assert loaded.shell_mode("bot", frozenset({"agents", "dev"}), "web1") == "strict"
    assert loaded.shell_mode("alice", frozenset({"dev"}), "web1") == "guard"
    config.write_text(base + '[[groups]]\nname = "agents"\nshell_mode = "strickt"\n')
    with pytest.raises(ConfigError, match=r"groups\[0\]\.shell_mode: must be"):
        load_config(config)


def edit_sequences(count: int) -> list[list[str]]:
    """Edit sequences drawn by Hypothesis (digits and spaces, so that whatever the edits make
    of `echo `, nothing but `echo` or a command that does not exist can run)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from tests.proxy.test_line_editor import KEYS

    drawn: list[list[str]] = []
    text = st.text(alphabet=st.sampled_from("0123456789 "), min_size=1, max_size=5)

    @settings(
        max_examples=count,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(st.one_of(text, st.sampled_from(sorted(KEYS))), min_size=1, max_size=12))
    def draw(actions: list[str]) -> None:
        drawn.append(actions)

    draw()
    return drawn[-count:]


async def test_what_runs_on_the_target_is_what_was_judged_for_generated_edits(
    harness: GatewayHarness,
) -> None:
    """Hypothesis draws edit sequences (cursor moves, Backspace, Delete, Ctrl-K/U/W, typed text
    in pieces) applied after `echo `. For every line: the judged command (the recording's
    `command` event) is exactly what the keys make (the editor tests' independent model), and
    the target printed exactly what `echo` of that text prints, so it ran that text."""
    from tests.proxy.test_line_editor import keys_of, model

    await start_strict(harness, canary=False)
    sequences = edit_sequences(12)
    term = await Screen.start(harness, cols=200)
    await term.prompt()
    expected = []
    for index, actions in enumerate(sequences, start=2):
        line = model(["echo ", *actions])
        expected.append(line)
        term.type(keys_of(["echo ", *actions]) + b"\r")
        await term.prompt(index)
    term.type("exit\r")
    await term.close()
    recorded = (await recordings(harness))[0]
    judged = [e["command"] for e in recorded.of("command")][:-1]  # the last is `exit`
    assert judged == [line for line in expected if line.strip()]
    output = recorded.output().decode()
    for line in judged:
        words = line.split()
        if words[0] == "echo":
            assert "\r\n" + " ".join(words[1:]) + "\r\n" in output, (line, output)


@pytest.mark.parametrize(
    "line",
    [
        "env -i bash",
        "timeout 100 bash",
        "b''ash",
        "exec -a x bash",
        "(bash)",
        "find . -exec sh \\;",
        "sudo su",
        "busybox sh",
        "script -c ls /dev/null",
        "rlwrap bash",
        "ed",
        "python3 -X dev",
        "python3 -i -c 1",
        "python3 -",
        "perl -I lib",
        "ssh -p 22 localhost",
        "sqlite3 -cmd x db",
        "psql -h db -U app",
        "$(echo bash)",
    ],
)
def test_a_line_whose_program_reads_further_commands_is_opaque(line: str) -> None:
    """Without a rule naming it, such a line gets the `unparsable` verdict (here: review, which
    with no approvers configured is denied): never allow."""
    from proxy.inspection import decide_strict_line
    from proxy.policy import Action, Caller, parse_policy

    policy = parse_policy({"policy": {"default": "allow"}}, "gateway.toml")
    verdict = decide_strict_line(policy, Caller("alice", frozenset({"dev"})), "web1", line)
    assert verdict.action is not Action.ALLOW, verdict


@pytest.mark.parametrize(
    "line",
    [
        "python3 -c 'print(1)'",
        "python3 -u script.py",
        "perl -e 1",
        "psql -c 'select 1'",
        "sqlite3 db 'select 1'",
        "ssh -p 22 host uptime",
        "less notes.txt",
        "ls -l",
    ],
)
def test_a_line_whose_program_is_given_its_work_is_judged_as_usual(line: str) -> None:
    from proxy.inspection import decide_strict_line
    from proxy.policy import Action, Caller, parse_policy

    policy = parse_policy({"policy": {"default": "allow"}}, "gateway.toml")
    verdict = decide_strict_line(policy, Caller("alice", frozenset({"dev"})), "web1", line)
    assert verdict.action is Action.ALLOW, verdict


async def test_a_very_long_line_is_judged_whole(harness: GatewayHarness, tmp_path: Path) -> None:
    """Over 64 rows of an 80-column terminal, with what looks like a prompt and `true` at the
    end: the gateway judges the line it holds, not the screen."""
    await start_strict(harness)
    victim = tmp_path / "x-canary"
    victim.write_text("keep")
    term = await Screen.start(harness)
    await term.prompt()
    term.type(f"rm {victim} " + "#" * 6000 + "\r\n$ true\r")
    await term.expect_count(b"[hoop] denied", 1)
    await term.prompt(4)  # after the empty line the \n made, and `$ true`
    assert victim.exists()
    term.type("exit\r")
    await term.close()


async def test_carried_state_is_quoted_by_the_gateway(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    """A directory name and an exported value full of quotes and `$(...)` come back from the
    target as data: the gateway quotes them into the next line's prefix, so they never run."""
    await start_strict(harness, canary=False)
    odd = tmp_path / "d'; touch INJECTED-1; '"
    odd.mkdir()
    term = await Screen.start(harness, cols=200)
    await term.prompt()
    term.type(f'cd "{odd}" && export V="a\'b\\$(touch INJECTED-2)c"\r')
    await term.prompt(2)
    term.type('pwd; printf "%s\\n" "$V"\r')
    await term.expect(f"{odd}\r\na'b$(touch INJECTED-2)c\r\n".encode())
    await term.prompt(3)
    term.type("exit\r")
    await term.close()
    assert not list(tmp_path.rglob("INJECTED*"))
    assert not (Path.home() / "INJECTED-1").exists()


async def test_state_files_a_session_left_are_removed_an_hour_later(
    harness: GatewayHarness,
) -> None:
    """A session that ends while a command runs never reads its state file (the trap writes
    it as the command is hung up); the next strict session removes such files an hour old."""
    await start_strict(harness)
    old = Path.home() / ".hoop-strict-0000test-old.a"
    young = Path.home() / ".hoop-strict-0000test-young.a"
    old.write_text("x")
    young.write_text("x")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    try:
        term = await Screen.start(harness)
        await term.prompt()
        assert not old.exists() and young.exists()
        term.type("exit\r")
        await term.close()
    finally:
        old.unlink(missing_ok=True)
        young.unlink(missing_ok=True)


async def test_transfers_and_git_work_for_a_strict_caller(harness: GatewayHarness, tmp_path: Path):
    """Strict mode is the interactive shell only: scp (both modes), sftp, rsync and git reach
    a strict target through their own exec or subsystem, as for anyone (issue 12)."""
    await start_strict(harness, canary=False)
    local = tmp_path / "file.txt"
    local.write_bytes(b"through a strict target\n" * 500)
    for flags, name in (([], "sftp-mode.txt"), (["-O"], "legacy.txt")):
        up = await harness.run(
            "scp", *flags, "-J", harness.jump("alice"), str(local), f"web1:{tmp_path / name}",
            user="alice",
        )  # fmt: skip
        assert up.status == 0, up.err
        assert (tmp_path / name).read_bytes() == local.read_bytes()
    batch = tmp_path / "batch"
    batch.write_text(f"get {tmp_path / 'legacy.txt'} {tmp_path / 'via-sftp.txt'}\n")
    got = await harness.run(
        "sftp", "-b", str(batch), "-J", harness.jump("alice"), "web1", user="alice"
    )
    assert got.status == 0, got.err
    assert (tmp_path / "via-sftp.txt").read_bytes() == local.read_bytes()
    ssh = f"ssh -F {harness.client_config('alice')} -p {harness.port}"
    synced = await harness.run_plain(
        "rsync", "-a", "-e", ssh, f"{local}", f"alice+web1@127.0.0.1:{tmp_path}/rsynced.txt"
    )
    assert synced.status == 0, synced.err
    assert (tmp_path / "rsynced.txt").read_bytes() == local.read_bytes()
    origin = tmp_path / "origin"
    assert (await harness.run_plain("git", "init", "-q", "-b", "main", str(origin))).status == 0
    commit = ["git", "-C", str(origin), "-c", "user.name=t", "-c", "user.email=t@t"]
    await harness.run_plain(*commit, "commit", "-q", "--allow-empty", "-m", "strict clone")
    cloned = await harness.run_plain(
        "git", "clone", "-q", f"ssh://alice+web1@127.0.0.1:{harness.port}{origin}",
        str(tmp_path / "clone"),
        extra_env={"GIT_SSH_COMMAND": f"ssh -F {harness.client_config('alice')}"},
    )  # fmt: skip
    assert cloned.status == 0, cloned.err
    log = await harness.run_plain("git", "-C", str(tmp_path / "clone"), "log", "--format=%s")
    assert log.out == "strict clone\n"


async def test_killing_the_client_of_a_held_strict_line_withdraws_it_at_once(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    """A strict shell's held line whose caller vanished (ssh killed, no Ctrl-C) is withdrawn
    at once, as a guard shell's and an exec's are, and never runs."""
    from storage.state import HoldStatus

    await start_strict(harness)
    first = tmp_path / "restart-1"
    term = await Screen.start(harness)
    await term.prompt()
    term.type(f"touch {first}\r")
    hold = await pending_hold(harness)
    await term.expect("held as")
    term.process.kill()
    killed = time.monotonic()
    assert harness.runtime is not None
    broker = harness.runtime.broker
    while (current := await broker.get_hold(hold.id)) is not None and (
        current.status is HoldStatus.PENDING
    ):
        assert time.monotonic() - killed < 3, "the hold is still pending"
        await asyncio.sleep(0.05)
    assert current is not None and current.status is HoldStatus.WITHDRAWN
    await term.close()
    assert not first.exists()
