"""Session channels through the gateway: terminals, sftp and scp, as real clients use them."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pty
import shutil
import struct
import sys
import termios
from pathlib import Path

import pytest

from tests.fixtures.gateway import GatewayHarness, only_recording, recordings

pytestmark = pytest.mark.timeout(60)


async def start_basic(harness: GatewayHarness) -> None:
    harness.add_user("alice", groups=("dev",))
    harness.add_target("web1")
    await harness.start()


async def test_sftp_transfers_and_records_each_operation(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    await start_basic(harness)
    local = tmp_path / "local.bin"
    data = os.urandom(2 * 1024 * 1024 + 123)
    local.write_bytes(data)
    remote = tmp_path / "remote"
    remote.mkdir()
    batch = tmp_path / "batch"
    batch.write_text(
        f"put {local} {remote}/up.bin\n"
        f"get {remote}/up.bin {tmp_path}/down.bin\n"
        f"rename {remote}/up.bin {remote}/moved.bin\n"
        f"mkdir {remote}/sub\n"
        f"rm {remote}/moved.bin\n"
    )
    result = await harness.run(
        "sftp", "-J", harness.jump("alice"), "-b", str(batch), "web1", user="alice"
    )
    assert result.status == 0, result.err
    assert (tmp_path / "down.bin").read_bytes() == data
    assert (remote / "sub").is_dir()
    assert not (remote / "moved.bin").exists()
    recorded = await only_recording(harness)
    ops = [(e["op"], e["path"], e["size"]) for e in recorded.of("file_transfer")]
    up = f"{remote}/up.bin".encode()
    assert ("write", up, len(data)) in ops
    assert ("read", up, len(data)) in ops
    assert ("rename", up, 0) in ops
    assert ("mkdir", f"{remote}/sub".encode(), 0) in ops
    assert ("remove", f"{remote}/moved.bin".encode(), 0) in ops
    renamed = next(e for e in recorded.of("file_transfer") if e["op"] == "rename")
    assert renamed["detail"] == f"to {remote}/moved.bin: ok"


@pytest.mark.parametrize("legacy", [False, True], ids=["scp-sftp", "scp-legacy"])
async def test_scp_copies_both_ways(harness: GatewayHarness, tmp_path: Path, legacy: bool) -> None:
    await start_basic(harness)
    local = tmp_path / "file.txt"
    local.write_bytes(b"hello through the gateway\n" * 1000)
    remote = tmp_path / "remote.txt"
    flags = ["-O"] if legacy else []
    up = await harness.run(
        "scp", *flags, "-J", harness.jump("alice"), str(local), f"web1:{remote}", user="alice"
    )
    assert up.status == 0, up.err
    down = await harness.run(
        "scp",
        *flags,
        "-P",
        str(harness.port),
        f"alice+web1@127.0.0.1:{remote}",
        str(tmp_path / "back.txt"),
        user="alice",
    )
    assert down.status == 0, down.err
    assert (tmp_path / "back.txt").read_bytes() == local.read_bytes()
    size = len(local.read_bytes())
    uploaded, downloaded = await recordings(harness)
    ops = [
        (e["op"], e["size"]) for e in uploaded.of("file_transfer") + downloaded.of("file_transfer")
    ]
    assert ("write", size) in ops and ("read", size) in ops


def set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class Terminal:
    """A real ssh client on a real pseudo-terminal, driven like a person at a keyboard."""

    def __init__(self, master: int, process: asyncio.subprocess.Process) -> None:
        self.master = master
        self.process = process
        self.screen = b""

    @classmethod
    async def start(
        cls, harness: GatewayHarness, *args: str, rows: int = 24, cols: int = 80
    ) -> Terminal:
        master, slave = pty.openpty()
        set_size(slave, rows, cols)
        process = await asyncio.create_subprocess_exec(
            "ssh",
            *harness.ssh_args("alice"),
            "-tt",
            *args,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env={**harness.env(None), "TERM": "xterm-256color"},
            start_new_session=True,
        )
        os.close(slave)
        os.set_blocking(master, False)
        return cls(master, process)

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    async def expect(self, needle: bytes, timeout: float = 10.0) -> bytes:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while needle not in self.screen:
            if loop.time() > deadline:
                raise AssertionError(f"{needle!r} not seen; screen so far: {self.screen!r}")
            try:
                chunk = os.read(self.master, 65536)
            except BlockingIOError:
                await asyncio.sleep(0.01)
                continue
            except OSError:
                break
            self.screen += chunk
        assert needle in self.screen, self.screen
        return self.screen

    def resize(self, rows: int, cols: int) -> None:
        set_size(self.master, rows, cols)
        self.process.send_signal(28)  # SIGWINCH

    async def close(self) -> int:
        try:
            return await asyncio.wait_for(self.process.wait(), 10)
        finally:
            os.close(self.master)


async def test_terminal_type_size_resize_and_exit_status(harness: GatewayHarness) -> None:
    await start_basic(harness)
    terminal = await Terminal.start(harness, "-J", harness.jump("alice"), "web1", rows=30, cols=100)
    terminal.type("PS1='$ '; echo term=$TERM; stty size\n")
    await terminal.expect(b"term=xterm-256color")
    await terminal.expect(b"30 100")
    terminal.resize(40, 120)
    for _ in range(50):  # the window change travels on its own; ask until it has arrived
        terminal.type("stty size\n")
        try:
            await terminal.expect(b"40 120", timeout=0.3)
            break
        except AssertionError:
            continue
    await terminal.expect(b"40 120")
    terminal.type("exit 7\n")
    assert await terminal.close() == 7
    recorded = await only_recording(harness)
    assert (recorded.header.term, recorded.header.cols, recorded.header.rows) == (
        "xterm-256color",
        100,
        30,
    )
    assert [(e["cols"], e["rows"]) for e in recorded.of("resize")] == [(120, 40)]
    assert b"stty size" in recorded.input()
    assert recorded.of("exit_status")[0]["status"] == 7


async def test_ctrl_c_interrupts_the_remote_command(harness: GatewayHarness) -> None:
    await start_basic(harness)
    terminal = await Terminal.start(harness, "-p", str(harness.port), "alice+web1@127.0.0.1")
    terminal.type("PS1='$ '; sleep 30\n")
    await asyncio.sleep(0.5)
    terminal.type("\x03")
    await terminal.expect(b"^C")
    terminal.type("echo after=$?\n")
    await terminal.expect(b"after=130")
    terminal.type("exit\n")
    assert await terminal.close() == 0


@pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is not installed")
async def test_rsync_over_ssh_through_the_gateway(harness: GatewayHarness, tmp_path: Path) -> None:
    await start_basic(harness)
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.txt").write_text("alpha\n")
    (source / "b.bin").write_bytes(os.urandom(100_000))
    ssh = f"ssh -F {harness.client_config('alice')} -p {harness.port}"
    result = await harness.run_plain(
        "rsync", "-a", "-e", ssh, f"{source}/", f"alice+web1@127.0.0.1:{tmp_path}/dst/"
    )
    assert result.status == 0, result.err
    assert (tmp_path / "dst" / "b.bin").read_bytes() == (source / "b.bin").read_bytes()


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
async def test_git_clone_over_ssh_through_the_gateway(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    await start_basic(harness)
    origin = tmp_path / "origin"
    for argv in (
        ["git", "init", "-q", "-b", "main", str(origin)],
        [
            "git",
            "-C",
            str(origin),
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "first through the gateway",
        ],
    ):
        assert (await harness.run_plain(*argv)).status == 0
    result = await harness.run_plain(
        "git",
        "clone",
        "-q",
        f"ssh://alice+web1@127.0.0.1:{harness.port}{origin}",
        str(tmp_path / "clone"),
        extra_env={"GIT_SSH_COMMAND": f"ssh -F {harness.client_config('alice')}"},
    )
    assert result.status == 0, result.err
    log = await harness.run_plain("git", "-C", str(tmp_path / "clone"), "log", "--format=%s")
    assert log.out == "first through the gateway\n"


class RefuseWord:
    """The smallest inspector: refuses exec commands holding a word (the policy engine's seam)."""

    def __init__(self, word: str) -> None:
        self.word = word

    async def check_exec(self, link, channel, command, notify=lambda text: None, terminal=False):  # type: ignore[no-untyped-def]
        if self.word in command:
            notify("hoop: checking...\r\n")
            return f"hoop: denied: {self.word!r} is not allowed"
        return None


async def test_an_inspector_can_refuse_an_exec_before_it_runs(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    harness.add_user("alice", groups=("dev",))
    harness.add_target("web1")
    await harness.start()
    assert harness.gateway is not None
    harness.gateway.context.inspector = RefuseWord("touch")
    marker = tmp_path / "marker"
    refused = await harness.ssh_jump("alice", "web1", f"touch {marker}")
    assert refused.status == 126
    assert refused.err == "hoop: checking...\r\nhoop: denied: 'touch' is not allowed\r\n"
    assert not marker.exists()
    allowed = await harness.ssh_jump("alice", "web1", "echo fine")
    assert allowed.out == "fine\n"
    first = (await recordings(harness))[0]
    assert first.of("exec")[0]["command"] == f"touch {marker}".encode()
    assert first.of("exit_status") == []


# -- the policy meets every way a caller can type commands --------------------------------------


async def start_with_policy(harness: GatewayHarness) -> None:
    from tests.proxy.test_runtime import start

    await start(harness)  # `rm -rf *` is denied on web1


async def typed_into_exec(
    harness: GatewayHarness, command: str, keys: bytes, until: bytes
) -> bytes:
    """`ssh -tt alice+web1@gateway COMMAND`, `keys` typed once its prompt is up; the output
    until `until` shows (the test fails after 20 s without it)."""
    client = await asyncio.create_subprocess_exec(
        "ssh",
        *harness.ssh_args("alice"),
        "-tt",
        "-p",
        str(harness.port),
        "alice+web1@127.0.0.1",
        command,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=harness.env(None),
        start_new_session=True,
    )
    assert client.stdin is not None and client.stdout is not None
    seen = bytearray()
    try:
        await asyncio.sleep(1.0)  # the prompt first: keys typed at a prompt, not a paste
        client.stdin.write(keys)
        deadline = asyncio.get_running_loop().time() + 20
        while until not in seen:
            left = deadline - asyncio.get_running_loop().time()
            assert left > 0, f"{until!r} never shown: {bytes(seen)!r}"
            with contextlib.suppress(TimeoutError):
                seen += await asyncio.wait_for(client.stdout.read(4096), left)
        await asyncio.sleep(0.5)
    finally:
        if client.returncode is None:
            client.kill()
            await client.wait()
    return bytes(seen)


async def test_a_command_typed_into_an_exec_with_a_terminal_is_judged(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    """`ssh -t alice+web1@gateway bash` is an exec request (`bash`, allowed) with a terminal:
    what alice then types into that bash must meet the rules as in a login shell, or every
    deny rule is one `ssh -t host bash` away."""
    await start_with_policy(harness)
    keep = tmp_path / "keep"
    keep.mkdir()
    seen = await typed_into_exec(harness, "bash --norc", f"rm -rf {keep}\r".encode(), b"denied")
    assert keep.is_dir(), seen


async def test_what_is_typed_into_a_program_that_may_read_commands_meets_the_gate(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    """`ssh -t alice+web1@gateway python3`: a REPL runs what is typed into it (`os.system`),
    so it is gated like a shell (issue 12, class 9): its lines are judged as shell lines, and
    one that does not parse as shell is held (denied here, no approvers), never run unseen."""
    await start_with_policy(harness)
    seen = await typed_into_exec(
        harness, f"{sys.executable} -q", b'print("rm -rf " + "/" * 3)\r', b"[hoop]"
    )
    assert b"rm -rf ///" not in seen


async def test_a_shell_without_a_terminal_is_not_let_through_unjudged(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    """`ssh -T alice+web1@gateway < script`: the target's shell reads its commands from the
    channel, with no terminal and no Enter for the gateway to judge. It must not run them
    unjudged: it gets the `unparsable` verdict (review, which without `[policy] approvers`
    nobody can give: denied)."""
    await start_with_policy(harness)
    keep = tmp_path / "keep"
    keep.mkdir()
    result = await harness.run(
        "ssh",
        "-T",
        "-p",
        str(harness.port),
        "alice+web1@127.0.0.1",
        user="alice",
        stdin=f"rm -rf {keep}\necho ran\n".encode(),
        timeout=40,
    )
    assert result.status == 126 and "ran" not in result.out, result
    assert "without a terminal" in result.err
    assert keep.is_dir()


@pytest.mark.parametrize(
    "command", ["bash", "sh -s", "env bash --norc", "exec sh", "sudo -i", "su -"]
)
async def test_an_exec_of_a_shell_reading_the_channel_is_not_let_through_unjudged(
    harness: GatewayHarness, tmp_path: Path, command: str
) -> None:
    """`ssh alice+web1@gateway bash < script`: the exec string is only `bash`, which reads the
    commands to run from the channel, as `... | bash` reads them from a pipe. Without a
    terminal nothing of that input is judged, so the exec itself is opaque (unparsable)."""
    await start_with_policy(harness)
    keep = tmp_path / "keep"
    keep.mkdir()
    result = await harness.run(
        "ssh",
        "-p",
        str(harness.port),
        "alice+web1@127.0.0.1",
        command,
        user="alice",
        stdin=f"rm -rf {keep}\necho ran\n".encode(),
        timeout=40,
    )
    assert result.status == 126 and "ran" not in result.out, result
    assert "reads the commands to run from its input" in result.err
    assert keep.is_dir()
