"""Judging SQL for one PostgreSQL session: classes -> verdict with the policy's own rules and
fold (`proxy.policy.decide_sql`, `worst_verdict`), a read-only target's own refusal, and the
one place the text a client reads for an outcome is made."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Hashable

from proxy.pg import classify as sqlclass
from proxy.pg.settings import PgTarget
from proxy.policy import Action, Basis, Caller, Policy, Verdict, decide_sql, worst_verdict

Decide = Callable[[sqlclass.Classified], Verdict]
VERDICT_CACHE = 4096  # statement shapes whose verdict a session keeps


def make_decider(policy: Policy, caller: Caller, target: PgTarget) -> Decide:
    """Classes -> verdict for one session, cached by the classifier's key (the caller and
    target never change within a session, so the verdict of a shape is fixed)."""
    cache: dict[Hashable, Verdict] = {}

    def one(statement: sqlclass.Statement) -> Verdict:
        refusal = read_only_refusal(target, statement)
        if refusal is not None:
            return refusal
        return decide_sql(
            policy, caller, target.name, statement.classes, statement.text, statement.tables
        )

    def decide(found: sqlclass.Classified) -> Verdict:
        key = found.key if len(found.statements) == 1 else None
        if caller.expires_at is not None and time.time() > caller.expires_at:
            key = None  # past the caller's sign-in: [policy] on_expiry judges each afresh
        cached = cache.get(key) if key is not None else None
        if cached is not None:
            return _for_text(cached, found.statements[0].text)
        worst = worst_verdict(one(statement) for statement in found.statements)
        if worst is None:
            worst = decide_sql(policy, caller, target.name, frozenset(), "")
        if key is not None and len(cache) < VERDICT_CACHE:
            cache[key] = worst
        return worst

    return decide


def read_only_refusal(target: PgTarget, statement: sqlclass.Statement) -> Verdict | None:
    """A read-only target refuses what could write, whatever the rules say."""
    if not target.read_only or not statement.classes & sqlclass.NOT_READ_ONLY:
        return None
    found = ", ".join(sorted(statement.classes & sqlclass.NOT_READ_ONLY))
    return Verdict(
        Action.DENY,
        Basis.RULE,
        f"{target.name} is a read-only target ({found})",
        rule="read-only-target",
        command=statement.text,
    )


def _for_text(cached: Verdict, text: str) -> Verdict:
    """A cached verdict of a shape, naming this text as its command."""
    if cached.action is Action.ALLOW or cached.command in (None, text):
        return cached
    return dataclasses.replace(cached, command=text)


def refusal_message(verdict: Verdict) -> str:
    """What a denied client reads: the rule's message and the rule."""
    text = verdict.message or "denied by the gateway's policy"
    if verdict.rule:
        text += f" (rule {verdict.rule})"
    return f"hoop: {text}"


def gateway_text(message: str) -> str:
    """A message of the gateway's as a client reads it (a notice, an error), or ""."""
    return f"hoop: {message}" if message else ""


def outcome_text(verdict: Verdict, allowed: bool, message: str) -> str:
    """What the client reads once a verdict was carried out: the notice beside a statement
    that runs (the approval, "" for none), or the error of one that does not (a deny says its
    rule; a hold that was refused, withdrawn or expired says what happened)."""
    if allowed:
        return gateway_text(message)
    if verdict.action is Action.DENY:
        return refusal_message(verdict)
    return f"hoop: {message}"
