"""File rules meet shell redirects (issue 12, class 6, the file half): a path read or written
through `<`, `>`, `>>`, `<>` or an `exec` redirect is judged like the same operation over SFTP,
through a real `ssh` exec request."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.policy import Action, decide_exec
from tests.fixtures.gateway import GatewayHarness
from tests.proxy.ssh.test_file_rules import MESSAGE, start
from tests.proxy.test_policy_files import ALICE, policy

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize(
    "command",
    [
        "cat < {canary}",
        "exec 3<{dir}/x-c''anary; cat <&3",
        "cat 0<{dir}//x-canary",
        "while read l; do echo $l; done < {canary}",
        ": > {canary}",
        "echo gone >> {canary}",
        "cat <> {canary}",
    ],
)
async def test_a_redirect_to_a_denied_path_in_an_exec_never_runs(
    harness: GatewayHarness, tmp_path: Path, command: str
) -> None:
    canary, _ = await start(harness, tmp_path)
    line = command.format(canary=canary, dir=tmp_path)
    result = await harness.ssh_direct("alice+t1", line)
    assert result.status == 126, (result.out, result.err)
    assert "no-canary" in result.err and MESSAGE in result.err
    assert "tweet" not in result.out
    assert canary.read_text() == "tweet\n"


@pytest.mark.parametrize(
    "line",
    [
        "cat < /tmp/x-canary",
        "exec 3</tmp/x-c''anary; cat <&3",
        ": > /tmp/x-canary",
        "echo x >> /tmp//x-canary",
        "sort <> /tmp/x-canary",
        "{ cat; } < /tmp/x-canary",
        "sudo cat < /tmp/x-canary",
    ],
)
def test_each_redirect_spelling_meets_the_file_rule(line: str) -> None:
    verdict = decide_exec(policy(), ALICE, "t1", line)
    assert (verdict.action, verdict.rule) == (Action.DENY, "no-canary"), verdict


@pytest.mark.parametrize(
    "line", ["cat /tmp/notes < /tmp/in", "echo hi > /tmp/out", "scp -f /srv/x"]
)
def test_redirects_no_rule_names_keep_the_commands_verdict(line: str) -> None:
    assert decide_exec(policy(), ALICE, "t1", line).action is Action.ALLOW


def test_a_redirect_to_an_expansion_that_may_be_the_file_is_not_allowed() -> None:
    for line in ["cat < /tmp/x-$N", "cat < /tmp/x-c*"]:
        assert decide_exec(policy(), ALICE, "t1", line).action is not Action.ALLOW, line


async def test_a_redirect_typed_into_a_shell_meets_the_file_rule(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    """The same lines typed at a real bash prompt over `ssh -tt`: refused at Enter."""
    from tests.proxy.ssh.test_typed_secrets import PROMPT, Terminal

    canary, _ = await start(harness, tmp_path)
    terminal = Terminal(harness)
    try:
        await terminal.until(PROMPT)
        for line in [f"cat < {canary}", f"exec 3<{tmp_path}/x-c''anary", f": > {canary}"]:
            terminal.seen.clear()  # the prompt is there: what comes next is this line's
            await terminal.type(line + "\r")
            await terminal.until(b"[hoop] denied")
            await terminal.until(PROMPT)
            assert b"tweet" not in terminal.seen
        terminal.seen.clear()
        await terminal.type("echo fi''ne\r")
        await terminal.until(b"fine\r\n")
        await terminal.type("exit\r")
    finally:
        terminal.close()
    assert canary.read_text() == "tweet\n"
