"""File rules in the policy, without sockets: the rule form's validation, path normalisation,
and the verdicts for SFTP-style requests and legacy scp (issue 12, class 10; redirects are in
tests/proxy/ssh/test_file_rules_redirects.py)."""

from __future__ import annotations

import tomllib

import pytest

from proxy.config import ConfigError
from proxy.policy import (
    Action,
    Basis,
    Caller,
    decide_exec,
    decide_file,
    decide_files,
    file_path,
    parse_policy,
)
from proxy.shell import UNKNOWN

ALICE = Caller("alice", frozenset({"dev"}))
RULES = """
[[rules]]
name = "no-canary"
files = ["*canary*"]
operations = ["read", "write", "delete"]
action = "deny"
message = "no canaries"

[[rules]]
name = "etc"
files = ["/etc/*"]
operations = ["read"]
action = "review"
approvers = ["oncall"]
"""


def policy(extra: str = "", default: str = "allow"):
    return parse_policy(tomllib.loads(f'[policy]\ndefault = "{default}"\n{RULES}{extra}'), "t")


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        ('files = ["/x"]\nshell = "ls"', "cannot go with shell"),
        ('files = ["/x"]\nsql = ["write"]', "cannot go with shell"),
        ('operations = ["read"]', "goes with files"),
        ('files = ["/x"]\noperations = ["execute"]', "not a file operation"),
        ("files = [1]", "glob string"),
    ],
)
def test_the_rule_form_is_validated(rule: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        parse_policy(tomllib.loads(f'[[rules]]\nname = "r"\naction = "deny"\n{rule}\n'), "t")


@pytest.mark.parametrize(
    ("path", "cwd", "pieces"),
    [
        ("/etc/passwd", None, ("/etc/passwd",)),
        ("//etc//./passwd", None, ("/etc/passwd",)),
        ("/tmp/../etc/passwd", None, ("/etc/passwd",)),
        ("passwd", "/etc", ("/etc/passwd",)),
        ("passwd", None, (UNKNOWN, "/passwd")),
        ("../../etc/passwd", None, (UNKNOWN, "/etc/passwd")),
        ("~/x", None, (UNKNOWN,)),
    ],
)
def test_paths_are_normalised_and_unknown_directories_stay_unknown(path, cwd, pieces) -> None:
    assert file_path(path, cwd) == pieces


def test_sftp_requests_meet_file_rules_then_catch_alls_then_the_default() -> None:
    rules = policy()
    denied = decide_file(rules, ALICE, "t1", "delete", file_path("/tmp/x-canary"))
    assert (denied.action, denied.rule, denied.message) == (Action.DENY, "no-canary", "no canaries")
    held = decide_file(rules, ALICE, "t1", "read", file_path("/etc/hostname"))
    assert (held.action, held.rule) == (Action.REVIEW, "etc")
    # the rule names read only: listing /etc is not its business
    assert decide_file(rules, ALICE, "t1", "list", file_path("/etc")).action is Action.ALLOW
    assert decide_file(policy(default="deny"), ALICE, "t1", "list", ("/srv",)).action is (
        Action.DENY
    )
    # a rename is judged on both paths
    verdict = decide_files(rules, ALICE, "t1", [("rename", "/tmp/a"), ("rename", "/tmp/b")])
    assert verdict.action is Action.ALLOW
    verdict = decide_files(rules, ALICE, "t1", [("read", "/tmp/a"), ("read", "/etc/x")])
    assert verdict.action is Action.REVIEW and verdict.command == "sftp read /etc/x"


def test_a_relative_path_of_unknown_directory_may_match_and_is_never_allowed() -> None:
    verdict = decide_file(policy(), ALICE, "t1", "read", file_path("hostname"))
    assert verdict.action is Action.REVIEW and verdict.basis is Basis.MAY_MATCH


@pytest.mark.parametrize(
    "line",
    ["scp -f /tmp/x-canary", "scp -r -t /srv/x-canary-drop", "/usr/bin/scp -p -f -- /x-canary"],
)
def test_legacy_scp_servers_meet_file_rules(line: str) -> None:
    verdict = decide_exec(policy(), ALICE, "t1", line)
    assert (verdict.action, verdict.rule) == (Action.DENY, "no-canary"), verdict


def test_a_legacy_scp_sink_may_write_any_name_under_its_directory() -> None:
    """`scp -t DIR` writes files whose names come later in the stream."""
    assert decide_exec(policy(), ALICE, "t1", "scp -t /srv").action is not Action.ALLOW
    only_etc = parse_policy(
        tomllib.loads('[[rules]]\nname = "etc"\nfiles = ["/etc/*"]\naction = "deny"\n'), "t"
    )
    assert decide_exec(only_etc, ALICE, "t1", "scp -t /srv").action is Action.ALLOW
    assert decide_exec(only_etc, ALICE, "t1", "scp -t /etc").action is Action.DENY
    assert decide_exec(only_etc, ALICE, "t1", "scp -f /srv/x").action is Action.ALLOW
