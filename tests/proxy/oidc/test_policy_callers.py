"""Agents in policy, rule by rule: `callers` selectors, writes held by default, and owners who
may not approve their own agent's holds (issue 16)."""

from __future__ import annotations

import time

import pytest

from proxy.config import ConfigError
from proxy.policy import (
    Action,
    Caller,
    decide_file,
    decide_shell,
    decide_sql,
    file_path,
    owner_refusal,
    parse_policy,
)

BOT = Caller("ci-bot", frozenset({"dev"}), kind="agent", owner="alice", client_id="ci-bot")
ALICE = Caller("alice", frozenset({"dev"}))


def policy(*rules: dict[str, object], **section: object):  # type: ignore[no-untyped-def]
    return parse_policy({"policy": section, "rules": list(rules)}, "gateway.toml")


@pytest.mark.parametrize(
    ("selector", "bot", "alice"),
    [
        ("agent:*", True, False),
        ("agent:CI-BOT", True, False),
        ("person:*", False, True),
        ("user:alice", False, True),
        ("group:DEV", True, True),
        ("owner:Alice", True, False),
    ],
)
def test_callers_select_agents_people_groups_and_owners(
    selector: str, bot: bool, alice: bool
) -> None:
    rules = policy({"name": "r", "callers": [selector], "shell": "ls", "action": "deny"})
    assert (decide_shell(rules, BOT, "web1", "ls").action is Action.DENY) == bot
    assert (decide_shell(rules, ALICE, "web1", "ls").action is Action.DENY) == alice


def test_a_caller_selector_must_say_what_it_selects() -> None:
    with pytest.raises(ConfigError, match="is not a caller"):
        policy({"name": "r", "callers": ["robots"], "action": "deny"})


def test_an_agents_writes_are_held_unless_the_policy_says_otherwise() -> None:
    default = policy()
    assert decide_sql(default, BOT, "db", {"write"}, "insert ...").action is Action.REVIEW
    assert decide_sql(default, BOT, "db", {"read"}, "select 1").action is Action.ALLOW
    assert decide_sql(default, ALICE, "db", {"write"}, "insert ...").action is Action.ALLOW
    assert decide_shell(default, BOT, "web1", "echo hi > /tmp/x").action is Action.REVIEW
    assert decide_shell(default, BOT, "web1", "cat /tmp/x").action is Action.ALLOW
    path = file_path("/srv/app.conf")
    assert decide_file(default, BOT, "web1", "write", path).action is Action.REVIEW
    assert decide_file(default, BOT, "web1", "read", path).action is Action.ALLOW
    strict = policy(agent_writes="deny")
    assert decide_sql(strict, BOT, "db", {"ddl"}, "drop table t").action is Action.DENY
    relaxed = policy(agent_writes="allow")
    assert decide_sql(relaxed, BOT, "db", {"write"}, "insert ...").action is Action.ALLOW


def test_an_owner_may_not_approve_their_agents_holds() -> None:
    owners = {"ci-bot": "alice", "deploy-bot": "group:ops"}
    assert "answers for agent ci-bot" in (owner_refusal("ALICE", (), "ci-bot", owners) or "")
    assert owner_refusal("bob", (), "ci-bot", owners) is None
    assert owner_refusal("carol", ("ops",), "deploy-bot", owners) is not None
    assert owner_refusal("alice", (), "ci-bot", owners, owner_may_approve=True) is None
    assert owner_refusal("alice", (), "someone", owners) is None


def test_after_a_sign_in_expires_on_expiry_says_what_a_command_gets() -> None:
    expired = Caller("dana", frozenset({"dev"}), expires_at=time.time() - 1)
    fresh = Caller("dana", frozenset({"dev"}), expires_at=time.time() + 600)
    held = policy(on_expiry="review", approvers=["oncall"])
    verdict = decide_shell(held, expired, "web1", "ls")
    assert verdict.action is Action.REVIEW and "sign-in has expired" in verdict.message
    assert decide_shell(held, fresh, "web1", "ls").action is Action.ALLOW
    refused = policy(on_expiry="deny")
    assert decide_sql(refused, expired, "db", {"read"}, "select 1").action is Action.DENY
    assert decide_shell(policy(), expired, "web1", "ls").action is Action.ALLOW  # "end": the
    # session is ended by its timer, policy does not judge the clock
    with pytest.raises(ConfigError, match="on_expiry"):
        policy(on_expiry="hold")
