"""Class 3 of issue 12: readline accepting a line without an Enter. Under readline's default
bindings `ESC #` (with an argument it uncomments and runs) and `C-x C-e` (runs what an editor
saved) are judged like an Enter; the commands that change the line editor (`bind`, `set -o vi`,
`INPUTRC`/`VISUAL`/`EDITOR`, `history -s`, `fc`) are a class of their own, refused here since
no approver is configured."""

from __future__ import annotations

from pathlib import Path

from tests.fixtures.gateway import GatewayHarness
from tests.proxy.ssh.guard import Agent, canary, start_guard


async def test_insert_comment_with_an_argument_is_judged(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    await start_guard(harness)
    target = canary(tmp_path)
    agent = await Agent.start(harness, tmp_path)
    try:
        agent.send(f"#rm {target}".encode())
        await agent.quiet(0.5)
        await agent.run(b"\x1b1\x1b#", "done-1")
        assert target.exists(), bytes(agent.seen)
        assert b"[hoop] denied" in agent.seen
    finally:
        await agent.close()


async def test_insert_comment_in_one_write_with_the_line_is_judged(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    await start_guard(harness)
    target = canary(tmp_path)
    agent = await Agent.start(harness, tmp_path)
    try:
        await agent.run(f"#rm {target}\x1b1\x1b#".encode(), "done-1")
        assert target.exists(), bytes(agent.seen)
    finally:
        await agent.close()


async def test_insert_comment_as_an_eight_bit_meta_key_is_judged(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    """In the C locale readline turns the byte 0xA3 into `ESC #`."""
    await start_guard(harness)
    target = canary(tmp_path)
    agent = await Agent.start(harness, tmp_path, env="LC_ALL=C")
    try:
        agent.send(f"#rm {target}".encode())
        await agent.quiet(0.5)
        await agent.run(b"\x1b1\xa3", "done-1")
        assert target.exists(), bytes(agent.seen)
    finally:
        await agent.close()


async def test_edit_and_execute_is_not_let_through(harness: GatewayHarness, tmp_path: Path) -> None:
    await start_guard(harness)
    target = canary(tmp_path)
    agent = await Agent.start(harness, tmp_path, env="VISUAL=true")
    try:
        agent.send(f"rm {target}".encode())
        await agent.quiet(0.5)
        await agent.run(b"\x18\x05", "done-1")
        assert target.exists(), bytes(agent.seen)
        assert b"edit-and-execute-command" in agent.seen
    finally:
        await agent.close()


async def test_commands_that_change_the_line_editor_are_their_own_class(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    await start_guard(harness)
    target = canary(tmp_path)
    agent = await Agent.start(harness, tmp_path)
    try:
        for number, line in enumerate(
            (
                "bind '\"\\C-t\": accept-line'",
                "set -o vi",
                "set -eo vi",
                "exec bash -o vi",
                "export VISUAL=true",
                "INPUTRC=/tmp/x bash",
                "history -s 'echo hi'",
                "fc -s",
                "PS1='Password: '; stty -echo",
            )
        ):
            start = len(agent.seen)
            await agent.run(f"{line}\r".encode(), f"done-{number}")
            assert b"[hoop] denied" in agent.seen[start:], (line, bytes(agent.seen[start:]))
        agent.send(f"rm {target}".encode())
        await agent.quiet(0.5)
        await agent.run(b"\x14", "done-t")  # C-t: transpose, not accept-line
        agent.send(f"\x15rm {target}".encode())
        await agent.quiet(0.5)
        await agent.run(b"\x1b1#", "done-vi")  # vi mode's insert-comment, were it on
        assert target.exists(), bytes(agent.seen)
    finally:
        await agent.close()
    # a `set -o` that does not touch the line editor runs as usual. In a shell of its own:
    # after the refused keys above, readline's state (a numeric argument, a redraw) sometimes
    # kept the gate from matching the echo, and it held the line (failing closed), even after
    # a Ctrl-C (seen in a full run)
    agent = await Agent.start(harness, tmp_path)
    try:
        start = len(agent.seen)
        await agent.run(b"set -o pipefail; echo fine\r", "done-ok")
        assert b"[hoop]" not in agent.seen[start:], bytes(agent.seen[start:])
    finally:
        await agent.close()
