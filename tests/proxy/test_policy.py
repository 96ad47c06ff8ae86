"""The policy engine: config validation, matching, verdicts, just-in-time access."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.config import ConfigError
from proxy.line_detector import CommandLine
from proxy.policy import (
    Action,
    ActiveGrant,
    Basis,
    Caller,
    Glob,
    Match,
    Policy,
    Verdict,
    decide_command_line,
    decide_exec,
    decide_paste,
    decide_shell,
    decide_sql,
    may_start_session,
    parse_policy,
    parse_rules,
    parse_timeout,
)
from proxy.shell import UNKNOWN, analyse_paste

ALICE = Caller("alice", frozenset({"dev"}))
BOB = Caller("bob", frozenset({"oncall", "dba"}))
AGENT = Caller("ci-bot", frozenset(), service_account=True)

ISSUE_RULES: list[dict[str, Any]] = [
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
        "approvals": 1,
        "timeout": "10m",
    },
]


def policy(rules: list[dict[str, Any]], **section: Any) -> Policy:
    raw: dict[str, Any] = {"rules": rules}
    if section:
        raw["policy"] = section
    return parse_policy(raw, "gateway.toml")


# ----------------------------------------------------------------------------- config


def test_the_issue_example_parses() -> None:
    parsed = policy(ISSUE_RULES)
    deny, review = parsed.rules
    assert deny.name == "no-recursive-delete" and deny.action is Action.DENY
    assert deny.message == "recursive delete is not allowed"
    assert review.review is not None
    assert review.review.approvers == ("oncall",)
    assert review.review.approvals == 1
    assert review.review.timeout_seconds == 600
    assert parsed.default is Action.ALLOW and parsed.unparsable is Action.REVIEW


def test_review_defaults_are_one_approval_and_ten_minutes() -> None:
    (rule,) = parse_rules(
        [{"name": "r", "shell": "x", "action": "review", "approvers": ["ops"]}], "g.toml"
    )
    assert rule.review is not None
    assert (rule.review.approvals, rule.review.timeout_seconds) == (1, 600)


@pytest.mark.parametrize(
    ("rules", "key", "problem"),
    [
        ("not a list", "rules", "array of tables"),
        ([42], "rules #1", "must be a table"),
        ([{"name": "a"}], "rules #1 (a).action", "missing"),
        ([{"name": "a", "action": "block"}], "rules #1 (a).action", "'block' is not an action"),
        ([{"name": "a", "action": "deny", "shel": "x"}], "rules #1 (a).shel", "unknown key"),
        ([{"name": "", "action": "deny"}], "rules #1.name", "non-empty string"),
        ([{"name": "a", "action": "deny", "users": "alice"}], "rules #1 (a).users", "list"),
        ([{"name": "a", "action": "deny", "shell": 3}], "rules #1 (a).shell", "glob string"),
        ([{"name": "a", "action": "deny", "shell": [""]}], "rules #1 (a).shell", "glob string"),
        ([{"name": "a", "action": "deny", "sql": ["DROP!"]}], "rules #1 (a).sql", "class name"),
        ([{"name": "a", "action": "review"}], "rules #1 (a).approvers", "approver groups"),
        (
            [{"name": "a", "action": "review", "approvers": ["x"], "approvals": 0}],
            "rules #1 (a).approvals",
            "1 or more",
        ),
        (
            [{"name": "a", "action": "review", "approvers": ["x"], "approvals": True}],
            "rules #1 (a).approvals",
            "whole number",
        ),
        (
            [{"name": "a", "action": "review", "approvers": ["x"], "timeout": "10 minutes"}],
            "rules #1 (a).timeout",
            "not a duration",
        ),
        (
            [{"name": "a", "action": "deny", "approvers": ["x"]}],
            "rules #1 (a).approvers",
            'only means something with action = "review"',
        ),
        (
            [{"name": "a", "action": "deny"}, {"name": "a", "action": "allow"}],
            "rules #2 (a).name",
            "already used by rule #1",
        ),
    ],
)
def test_rule_errors_name_the_rule_the_key_and_the_problem(
    rules: Any, key: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_policy({"rules": rules}, "/etc/hoop/gateway.toml")
    assert caught.value.path == "/etc/hoop/gateway.toml"
    assert caught.value.key == key
    assert problem in caught.value.problem


@pytest.mark.parametrize(
    ("section", "key", "problem"),
    [
        ({"unparsable": "allow"}, "policy.unparsable", "never allowed unseen"),
        ({"default": "maybe"}, "policy.default", "not an action"),
        ({"timeout": 0}, "policy.timeout", "longer than zero"),
        ({"defualt": "deny"}, "policy.defualt", "unknown key"),
    ],
)
def test_policy_section_errors(section: dict[str, Any], key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_policy({"policy": section}, "g.toml")
    assert caught.value.key == key and problem in caught.value.problem


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10m", 600), ("45s", 45), ("1h30m", 5400), ("2d", 172800), ("90", 90), (120, 120)],
)
def test_timeouts(text: object, seconds: int) -> None:
    assert parse_timeout(text) == seconds


@pytest.mark.parametrize("text", ["", "m10", "-5m", "1w", "10 minutes", True, 1.5, 0, "8d"])
def test_bad_timeouts(text: object) -> None:
    with pytest.raises(ValueError):
        parse_timeout(text)


# ----------------------------------------------------------------------------- globs


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("rm -rf *", ("rm -rf /var/lib",), Match.ALWAYS),
        ("rm -rf *", ("rm -rf",), Match.NEVER),
        ("rm -rf *", ("rm -rf ",), Match.ALWAYS),
        ("rm -rf *", ("rm -fr /",), Match.NEVER),
        ("rm -rf *", ("rm -rf ", UNKNOWN), Match.ALWAYS),
        ("rm -rf *", ("rm ", UNKNOWN), Match.SOMETIMES),
        ("rm -rf *", (UNKNOWN, " -rf /"), Match.SOMETIMES),
        ("rm -rf *", ("ls ", UNKNOWN), Match.NEVER),
        ("rm -rf /", ("rm -rf ", UNKNOWN), Match.SOMETIMES),
        ("a?c", ("abc",), Match.ALWAYS),
        ("a?c", ("a", UNKNOWN, "c"), Match.SOMETIMES),
        ("[a-c]x", ("bx",), Match.ALWAYS),
        ("[!a-c]x", ("bx",), Match.NEVER),
        ("[!a-c]x", ("dx",), Match.ALWAYS),
        ("*", (UNKNOWN,), Match.ALWAYS),
        ("a\\*", ("a*",), Match.ALWAYS),
        ("a\\*", ("ab",), Match.NEVER),
        ("systemctl   restart  *", ("systemctl restart nginx",), Match.ALWAYS),
    ],
)
def test_glob_matching_with_unknown_pieces(
    pattern: str, subject: tuple[Any, ...], expected: Match
) -> None:
    assert Glob.compile(pattern).match(subject) is expected


# ----------------------------------------------------------------------------- verdicts


def verdict(
    line: str,
    rules: list[dict[str, Any]] | None = None,
    caller: Caller = ALICE,
    target: str = "web1",
    **section: Any,
) -> Verdict:
    return decide_shell(
        policy(ISSUE_RULES if rules is None else rules, **section), caller, target, line
    )


def test_a_denied_command_names_the_rule_the_message_and_the_command() -> None:
    result = verdict("cd /tmp && sudo rm -rf /var/lib")
    assert result.action is Action.DENY
    assert result.rule == "no-recursive-delete"
    assert result.message == "recursive delete is not allowed"
    assert result.command == "rm -rf /var/lib"
    assert result.basis is Basis.RULE


def test_a_review_carries_approvers_approvals_and_timeout() -> None:
    result = verdict("systemctl restart nginx")
    assert result.action is Action.REVIEW
    assert result.approvers == ("oncall",)
    assert result.approvals == 1
    assert result.timeout_seconds == 600
    assert result.command == "systemctl restart nginx"


def test_nothing_matching_takes_the_default() -> None:
    assert verdict("ls -la").action is Action.ALLOW
    denied = verdict("ls -la", default="deny")
    assert denied.action is Action.DENY and denied.basis is Basis.DEFAULT


def test_an_empty_line_runs_nothing_even_when_the_default_is_deny() -> None:
    assert verdict("", default="deny").action is Action.ALLOW
    assert verdict("# just a note", default="deny").action is Action.ALLOW
    assert verdict("ls", default="deny").action is Action.DENY


def test_first_match_wins() -> None:
    rules = [
        {"name": "tmp-ok", "shell": "rm -rf /tmp/*", "action": "allow"},
        *ISSUE_RULES,
    ]
    assert verdict("rm -rf /tmp/build", rules).action is Action.ALLOW
    assert verdict("rm -rf /var", rules).action is Action.DENY


def test_the_most_severe_command_of_a_line_decides() -> None:
    result = verdict("systemctl restart nginx; rm -rf /")
    assert result.action is Action.DENY
    assert verdict("ls; systemctl restart nginx; ls").action is Action.REVIEW


def test_unparsable_lines_take_the_unparsable_default_never_allow() -> None:
    held = verdict("echo $((1+2))")
    assert held.action is Action.REVIEW and held.basis is Basis.UNPARSABLE
    assert "arithmetic" in held.message
    denied = verdict("echo $((1+2))", unparsable="deny")
    assert denied.action is Action.DENY


def test_opaque_programs_are_never_allowed_even_by_an_allow_everything_rule() -> None:
    rules = [{"name": "admins-anything", "groups": ["dev"], "action": "allow"}]
    result = verdict("$EDITOR /etc/passwd", rules)
    assert result.action is Action.REVIEW and result.basis is Basis.OPAQUE
    assert verdict("vim /etc/passwd", rules).action is Action.ALLOW


def test_a_deny_that_only_may_match_takes_the_unparsable_default() -> None:
    result = verdict("rm $TARGET")
    assert result.action is Action.REVIEW
    assert result.basis is Basis.MAY_MATCH and result.rule == "no-recursive-delete"
    assert verdict("rm $TARGET", unparsable="deny").action is Action.DENY


def test_a_review_that_may_match_still_holds_with_its_own_approvers() -> None:
    result = verdict("systemctl $VERB nginx")
    assert result.action is Action.REVIEW and result.approvers == ("oncall",)


def test_an_allow_needs_a_certain_match() -> None:
    rules = [{"name": "ls-ok", "shell": "ls *", "action": "allow"}]
    assert verdict("ls $X", rules, default="deny").action is Action.ALLOW
    assert verdict("l$X", rules, default="deny").action is not Action.ALLOW


def test_who_and_where() -> None:
    rules = [
        {
            "name": "dba-only",
            "users": ["bob"],
            "targets": ["db-*"],
            "shell": "psql *",
            "action": "allow",
        },
        {
            "name": "agents-review",
            "service_accounts": ["*"],
            "action": "review",
            "approvers": ["oncall"],
        },
        {"name": "no-psql", "shell": "psql *", "action": "deny"},
    ]
    assert verdict("psql -c 'select 1'", rules, BOB, "db-1").action is Action.ALLOW
    assert verdict("psql -c 'select 1'", rules, BOB, "web1").action is Action.DENY
    assert verdict("psql -c 'select 1'", rules, ALICE, "db-1").action is Action.DENY
    agent = verdict("uptime", rules, AGENT, "web1")
    assert agent.action is Action.REVIEW and agent.rule == "agents-review"
    assert verdict("uptime", rules, ALICE, "web1").action is Action.ALLOW


def test_groups_match_any_of_the_callers_groups() -> None:
    rules = [
        {
            "name": "oncall-restarts",
            "groups": ["oncall"],
            "shell": "systemctl restart *",
            "action": "allow",
        },
        *ISSUE_RULES,
    ]
    assert verdict("systemctl restart nginx", rules, BOB).action is Action.ALLOW
    assert verdict("systemctl restart nginx", rules, ALICE).action is Action.REVIEW


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("rm -r -f /srv", Action.DENY),
        ("rm -fr /srv", Action.DENY),
        ("rm -rfv /srv", Action.DENY),
        ("rm /srv -rf", Action.DENY),
        ("rm -r $X -f /srv", Action.DENY),
        ("rm -f /srv", Action.ALLOW),
        ("rm -f /tmp/fr x", Action.ALLOW),
        ("rm -- -rf", Action.ALLOW),
        ("rm -R -f /srv", Action.DENY),  # rm reads -R as -r (shell._OPTION_SPELLINGS)
        ("rm --recursive --f /srv", Action.DENY),  # long options, abbreviated too
        ("ls -R -f /srv", Action.ALLOW),  # another program: letters are letters
    ],
)
def test_deny_rules_meet_any_spelling_of_their_short_options(line: str, expected: Action) -> None:
    assert verdict(line).action is expected


def test_allow_rules_match_options_only_as_typed() -> None:
    rules = [{"name": "ls-ok", "shell": "ls -la *", "action": "allow"}]
    assert verdict("ls -la /", rules, default="deny").action is Action.ALLOW
    assert verdict("ls -al /", rules, default="deny").action is Action.DENY


def test_a_paste_takes_its_worst_line() -> None:
    lines = analyse_paste("ls\nsystemctl restart nginx\nrm -rf /\n")
    result = decide_paste(policy(ISSUE_RULES), ALICE, "web1", lines)
    assert result.action is Action.DENY and result.command == "rm -rf /"


def test_exec_requests_are_inspected_in_full() -> None:
    rules = [
        {"name": "no-force-push", "exec": "git-receive-pack *--force*", "action": "deny"},
        *ISSUE_RULES,
    ]
    parsed = policy(rules)
    assert decide_exec(parsed, AGENT, "web1", "uname -a").action is Action.ALLOW
    nested = decide_exec(parsed, AGENT, "web1", "uname -a; sh -c 'rm -rf /'")
    assert nested.action is Action.DENY and nested.command == "rm -rf /"
    whole = decide_exec(parsed, AGENT, "web1", "git-receive-pack 'x' --force")
    assert whole.action is Action.DENY and whole.rule == "no-force-push"
    broken = decide_exec(parsed, AGENT, "web1", "echo 'unterminated")
    assert broken.action is Action.REVIEW and broken.basis is Basis.UNPARSABLE


def test_exec_only_rules_do_not_judge_interactive_lines() -> None:
    rules = [{"name": "agent-exec", "exec": "*", "action": "review", "approvers": ["ops"]}]
    assert verdict("ls", rules).action is Action.ALLOW
    assert decide_exec(policy(rules), AGENT, "web1", "ls").action is Action.REVIEW


def test_sql_classes() -> None:
    rules = [
        {
            "name": "ddl-review",
            "sql": ["ddl", "truncate"],
            "action": "review",
            "approvers": ["dba"],
        },
        {"name": "no-copy-program", "sql": ["copy_program"], "action": "deny"},
        *ISSUE_RULES,
    ]
    parsed = policy(rules)
    assert decide_sql(parsed, ALICE, "db", {"read"}).action is Action.ALLOW
    ddl = decide_sql(parsed, ALICE, "db", {"ddl"}, "DROP TABLE t")
    assert ddl.action is Action.REVIEW and ddl.approvers == ("dba",)
    assert ddl.command == "DROP TABLE t"
    assert decide_sql(parsed, ALICE, "db", {"write", "copy_program"}).action is Action.DENY
    assert decide_sql(parsed, ALICE, "db", {"unparsable"}).action is Action.REVIEW


def test_a_line_off_the_screen() -> None:
    parsed = policy(ISSUE_RULES)
    certain = CommandLine("sudo rm -rf /srv", "$ ")
    assert decide_command_line(parsed, ALICE, "web1", certain).action is Action.DENY
    several = CommandLine("ls\nsystemctl restart nginx", "$ ")
    assert decide_command_line(parsed, ALICE, "web1", several).action is Action.REVIEW
    unsure = CommandLine("ls", "$ ", certain=False, reason="the prompt is no longer on the screen")
    held = decide_command_line(parsed, ALICE, "web1", unsure)
    assert held.action is Action.REVIEW and held.basis is Basis.UNPARSABLE
    assert "prompt is no longer" in held.message
    vim = CommandLine("", "", certain=False, full_screen=True)
    assert decide_command_line(parsed, ALICE, "web1", vim) is None
    secret = CommandLine("", "Password: ", False, "echo off", echoed=False, password_prompt=True)
    assert decide_command_line(parsed, ALICE, "web1", secret) is None
    blind = CommandLine("", "$ ", False, "echo off", echoed=False, password_prompt=False)
    assert decide_command_line(parsed, ALICE, "web1", blind).action is Action.REVIEW


def test_describe_is_one_readable_line() -> None:
    assert verdict("rm -rf /").describe() == (
        "deny by rule no-recursive-delete: rm -rf / (recursive delete is not allowed)"
    )
    assert verdict("ls").describe() == "allow (no rule matched)"


# ----------------------------------------------------------------------------- JIT

NOW = 1_800_000_000.0


def test_a_target_without_jit_needs_no_grant() -> None:
    access = may_start_session("alice", "web1", requires_jit=False, grants=[], now=NOW)
    assert access.allowed and access.grant is None


def test_a_jit_target_needs_a_live_grant_for_this_user_and_target() -> None:
    grants = [
        ActiveGrant("g-expired", "alice", "web1", NOW - 1),
        ActiveGrant("g-other-user", "bob", "web1", NOW + 3600),
        ActiveGrant("g-other-target", "alice", "db1", NOW + 3600),
    ]
    refused = may_start_session("alice", "web1", requires_jit=True, grants=grants, now=NOW)
    assert not refused.allowed
    assert "hoop-tui request web1" in refused.reason
    grants.append(ActiveGrant("g-short", "alice", "web1", NOW + 60))
    grants.append(ActiveGrant("g-long", "alice", "web1", NOW + 3600))
    allowed = may_start_session("alice", "web1", requires_jit=True, grants=grants, now=NOW)
    assert allowed.allowed and allowed.grant is not None and allowed.grant.id == "g-long"


def test_a_grant_that_expires_exactly_now_is_not_live() -> None:
    grants = [ActiveGrant("g", "alice", "web1", NOW)]
    assert not may_start_session("alice", "web1", requires_jit=True, grants=grants, now=NOW).allowed
