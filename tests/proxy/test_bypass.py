"""The bypass suite: tricks people use to slip a command past an inspecting gateway.

Every case is typed into a real interactive bash through the line detector, exactly as the SSH
data path will do it: keys are forwarded, readline's real output is read back, and at Enter the
line *as the screen shows it* is judged by the policy. The Enter itself is never forwarded, so
nothing here ever runs. Tricks the gateway cannot see are marked xfail (strict) with the
reason; docs/security-model.md lists the same limits.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from proxy.policy import (
    Action,
    Caller,
    Verdict,
    decide_command_line,
    decide_paste,
    parse_policy,
)
from proxy.shell import analyse_paste
from tests.proxy.bash_pty import WAIT, BashSession, Held

pytestmark = [
    pytest.mark.programs,
    pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash"),
]

POLICY = parse_policy(
    {
        "rules": [
            {
                "name": "no-recursive-delete",
                "shell": "rm -rf *",
                "action": "deny",
                "message": "recursive delete is not allowed",
            },
            {
                "name": "restarts-need-review",
                "shell": "systemctl restart *",
                "action": "review",
                "approvers": ["oncall"],
            },
            {"name": "no-danger-tool", "shell": "danger-tool *", "action": "deny"},
        ]
    },
    "gateway.toml",
)
ALICE = Caller("alice", frozenset({"dev"}))

DENY, REVIEW, ALLOW = Action.DENY, Action.REVIEW, Action.ALLOW
ENTER = b"\r"
UP, LEFT, HOME, DELETE = b"\x1b[A", b"\x1b[D", b"\x01", b"\x1b[3~"
CTRL_K, CTRL_U, CTRL_W, CTRL_Y = b"\x0b", b"\x15", b"\x17", b"\x19"
CTRL_L, CTRL_R, CTRL_O, CTRL_J, TAB = b"\x0c", b"\x12", b"\x0f", b"\n", b"\t"


@dataclass(frozen=True)
class Case:
    name: str
    packets: tuple[bytes, ...]
    expected: Action
    history: tuple[str, ...] = ()
    setup: tuple[str, ...] = ()  # lines whose Enter the test does forward, e.g. `stty -echo`
    out_of_reach: str | None = None
    shows: str | None = None  # the line the user sees at Enter, when the case is about editing


def line(name: str, text: str, expected: Action, out_of_reach: str | None = None) -> Case:
    return Case(name, (text.encode(), ENTER), expected, out_of_reach=out_of_reach)


def paste(text: str) -> bytes:
    return b"\x1b[200~" + text.encode() + b"\x1b[201~"


CASES = [
    # chaining
    line("semicolon", "ls; rm -rf /", DENY),
    line("and", "true && rm -rf /", DENY),
    line("or", "false || rm -rf /", DENY),
    line("pipe", "ls | rm -rf /", DENY),
    line("background", "sleep 1 & rm -rf /", DENY),
    line("subshell", "(cd / && rm -rf .)", DENY),
    line("group", "{ rm -rf /; }", DENY),
    line("if-block", "if true; then rm -rf /; fi", DENY),
    line("function", "f() { rm -rf /; }; f", DENY),
    # substitution
    line("dollar-paren", "echo $(rm -rf /)", DENY),
    line("backticks", "echo `rm -rf /`", DENY),
    line("nested-substitution", "echo $(echo $(rm -rf /))", DENY),
    line("process-substitution", "cat <(rm -rf /)", DENY),
    line("assignment-substitution", "X=$(rm -rf /)", DENY),
    line("substitution-as-program", "$(echo rm) -rf /", REVIEW),
    line("hidden-in-parameter-default", "echo ${X:-$(rm -rf /)}", REVIEW),
    # wrappers
    line("sudo", "sudo rm -rf /", DENY),
    line("sudo-options-env", "sudo -u root -E env FOO=1 rm -rf /", DENY),
    line("nohup-nice-timeout", "nohup nice -n 5 timeout 9 rm -rf /", DENY),
    line("bash-c", "bash -c 'rm -rf /'", DENY),
    line("sh-c-nested", "sh -c \"bash -c 'rm -rf /'\"", DENY),
    line("xargs", "echo / | xargs rm -rf", DENY),
    line("eval", "eval 'rm -rf /'", DENY),
    line("exec-command-builtin", "command exec rm -rf /", DENY),
    line("find-exec", "find /var -exec rm -rf {} +", DENY),
    line("sudo-restart", "sudo systemctl restart nginx", REVIEW),
    line("time-restart", "time systemctl restart nginx", REVIEW),
    line("pipe-into-sh", "echo 'rm -rf /' | sh", REVIEW),
    line("base64-into-bash", "echo cm0gLXJmIC8K | base64 -d | bash", REVIEW),
    line("here-string-into-bash", "bash <<< 'rm -rf /'", REVIEW),
    # quoting and paths
    line("backslash-in-name", "r\\m -rf /", DENY),
    line("leading-backslash", "\\rm -rf /", DENY),
    line("single-quoted-name", "'rm' -rf /", DENY),
    line("split-quotes", 'r""m -r"f" /', DENY),
    line("ansi-c-hex", "$'\\x72m' -rf /", DENY),
    line("ansi-c-octal", "$'\\162\\155' -rf /", DENY),
    line("ansi-c-half", "r$'\\x6d' -rf /", DENY),
    line("absolute-path", "/bin/rm -rf /", DENY),
    line("relative-path", "../../bin/rm -rf /", DENY),
    # variables, aliases, globs
    line("variable-program", "X=rm; $X -rf /", REVIEW),
    line("variable-default-program", "${CMD:-rm} -rf /", REVIEW),
    line("variable-target", "rm -rf $HOME", DENY),
    line("variable-options", "rm $OPTS /", REVIEW),
    line("alias-same-line", "alias x='rm -rf'; x /", DENY),
    line("alias-for-review", "alias x='systemctl restart'; x nginx", REVIEW),
    line("brace-expansion", "{rm,-rf,/}", REVIEW),
    line("glob-program", "/bin/r? -rf /", REVIEW),
    # history and deferred commands
    Case("history-bang", (b"!rm", ENTER), REVIEW, history=("rm -rf /var/lib",)),
    Case("history-quick-substitution", (b"^echo^rm", ENTER), REVIEW, history=("echo -rf /",)),
    line("fc-rerun", "fc -s rm", REVIEW),
    line("prompt-command", "PROMPT_COMMAND='rm -rf /'", DENY),
    # the prompt runs `rm -rf /` each time it is drawn: denied (bashlex even reads the
    # substitution inside the quotes of an assignment; when it cannot, the PS1 is held)
    line("prompt-substitution", "PS1='$(rm -rf /) $ '", DENY),
    line("prompt-substitution-export", "export PS1='`id`'", REVIEW),
    line("trap", "trap 'rm -rf /' EXIT", DENY),
    # no false alarms
    line("plain-listing", "ls -la /var/lib", ALLOW),
    line("quoted-text", "echo 'rm -rf /'", ALLOW),
    line("grep-for-it", "grep -r 'rm -rf' /etc", ALLOW),
    line("status-is-fine", "systemctl status nginx", ALLOW),
    line("comment", "# rm -rf /", ALLOW),
    # the parser gives up: never allowed
    line("arithmetic", "echo $((1 + 2))", REVIEW),
    line("unterminated-quote", "echo 'rm -rf /", REVIEW),
    # multi-line pastes
    Case("bracketed-paste", (paste("ls\nrm -rf /\n"),), DENY),
    Case("paste-without-brackets", (b"ls\rrm -rf /\r",), DENY),
    Case("paste-line-continuation", (paste("rm \\\n  -rf /\n"),), DENY),
    Case("paste-here-document-is-data", (paste("cat <<'EOF'\nrm -rf /\nEOF\n"),), ALLOW),
    Case("paste-into-a-started-line", (b"echo ", paste("x; rm -rf /")), DENY),
    # editing before Enter: the screen, not the keys, decides
    Case("delete-the-echo", (b"echo rm -rf /", HOME, DELETE * 5, ENTER), DENY, shows="rm -rf /"),
    Case("prefix-with-echo", (b"rm -rf /", HOME, b"echo ", ENTER), ALLOW, shows="echo rm -rf /"),
    Case(
        "kill-words-retype",
        (b"systemctl status nginx", CTRL_W * 2, b"restart nginx", ENTER),
        REVIEW,
        shows="systemctl restart nginx",
    ),
    Case("arrows-and-insert", (b"rm -f /x", LEFT * 4, b"r", ENTER), DENY, shows="rm -rf /x"),
    Case("kill-to-end", (b"rm -rf /; echo", LEFT * 6, CTRL_K, ENTER), DENY, shows="rm -rf /"),
    Case("clear-and-retype", (b"rm -rf /", CTRL_U, b"ls", ENTER), ALLOW, shows="ls"),
    Case(
        "yank-into-echo",
        (b"rm -rf /", CTRL_U, b"echo ", CTRL_Y, ENTER),
        ALLOW,
        shows="echo rm -rf /",
    ),
    Case(
        "history-recall", (UP, ENTER), DENY, history=("rm -rf /var/lib",), shows="rm -rf /var/lib"
    ),
    Case(
        "reverse-search",
        (CTRL_R, b"rm", ENTER),
        DENY,
        history=("rm -rf /var/lib", "ls"),
        shows="rm -rf /var/lib",
    ),
    Case("tab-completion", (b"dang", TAB, b" now", ENTER), DENY, shows="danger-tool  now"),
    Case("redraw-with-ctrl-l", (b"rm -rf /", CTRL_L, ENTER), DENY, shows="rm -rf /"),
    Case(
        "long-wrapped-line",
        (b"echo " + b"a" * 100 + b"; rm -rf /", ENTER),
        DENY,
        shows="echo " + "a" * 100 + "; rm -rf /",
    ),
    Case("typed-with-enter-in-one-packet", (b"rm -rf /\r",), DENY, shows="rm -rf /"),
    Case("ctrl-o-accepts", (b"rm -rf /", CTRL_O), DENY, shows="rm -rf /"),
    Case("ctrl-j-accepts", (b"rm -rf /", CTRL_J), DENY, shows="rm -rf /"),
    Case(
        "vi-mode-history",
        (b"\x1b", b"kk", ENTER),
        DENY,
        history=("rm -rf /var/lib",),
        setup=("set -o vi",),
        shows="rm -rf /var/lib",
    ),
    Case(
        "background-job-draws-a-harmless-line",
        (b"rm -rf /", WAIT, ENTER),
        REVIEW,
        setup=("(sleep 0.8; printf '\\r\\033[Kalice@web1:~$ ls') &",),
        shows="ls",  # the screen lies; the gateway notices that no key asked for it
    ),
    Case("echo-off", (b"rm -rf /", ENTER), REVIEW, setup=("stty -echo",), shows=""),
    # out of reach, said so
    line("flags-split", "rm -r -f /", DENY),
    line("flags-reordered", "rm -fr /", DENY),
    line("flags-extra", "rm -rfv /tmp", DENY),
    line("flags-after-operand", "rm / -rf", DENY),
    line("capital-r", "rm -R -f /", DENY),  # rm's own spellings of -r and -f (issue 12)
    line("long-options", "rm --recursive --force /", DENY),
    line(
        "interpreter",
        "python3 -c 'import shutil; shutil.rmtree(\"/srv\")'",
        DENY,
        out_of_reach="code run by an interpreter (python, perl, node) is not shell",
    ),
    line(
        "script-file",
        "./cleanup.sh",
        DENY,
        out_of_reach="the commands inside a script that runs are not visible",
    ),
]


def judge(held: Held) -> Action:
    """What the SSH data path will do with a held line or paste."""
    verdicts: list[Verdict] = []
    if held.paste is not None:
        verdicts.append(decide_paste(POLICY, ALICE, "web1", analyse_paste(held.paste.combined)))
    if held.line is not None:
        verdict = decide_command_line(POLICY, ALICE, "web1", held.line)
        if verdict is not None:
            verdicts.append(verdict)
    if held.rest_paste:
        verdicts.append(decide_paste(POLICY, ALICE, "web1", analyse_paste(held.rest_paste)))
    if not verdicts:
        return ALLOW
    return max((verdict.action for verdict in verdicts), key=lambda action: action.severity)


def _params() -> list[object]:
    params: list[object] = []
    for case in CASES:
        marks = []
        if case.out_of_reach:
            marks.append(pytest.mark.xfail(reason=case.out_of_reach, strict=True))
        params.append(pytest.param(case, id=case.name, marks=marks))
    return params


def test_the_suite_is_big_enough() -> None:
    assert len(CASES) >= 40


@pytest.mark.parametrize("case", _params())
def test_bypass(case: Case, tmp_path: Path) -> None:
    session = BashSession(tmp_path, history=case.history, executables=("danger-tool",))
    session.start()
    try:
        for setup_line in case.setup:
            session.type([setup_line.encode()])
            session.run_enter()
        held = session.type(case.packets)
        assert held is not None, "the line was never submitted"
        if case.shows is not None:
            assert held.line is not None and held.line.text == case.shows
        assert judge(held) is case.expected, (held, bytes(session.output))
    finally:
        session.stop()
