"""The approval broker's rules, over the real SQLite state store."""

from __future__ import annotations

import asyncio

import pytest

from proxy.holds.broker import ApprovalBroker, DecisionRefused, Person
from storage.sqlite_state import SqliteState
from storage.state import GrantStatus, HoldStatus

ALICE = Person("alice", frozenset({"dev"}))
BOB = Person("bob", frozenset({"oncall"}))
CAROL = Person("carol", frozenset({"oncall", "dev"}))
DAVE = Person("dave", frozenset({"dev"}))
T0 = 1_800_000_000.0


@pytest.fixture
def broker(tmp_path) -> ApprovalBroker:
    return ApprovalBroker(SqliteState.in_data_dir(tmp_path), "gw-1")


async def _hold(
    broker: ApprovalBroker, approvals: int = 1, session: str = "s1", timeout: float = 600
):
    return await broker.request_hold(
        session_id=session,
        user="alice",
        target="web1",
        command="systemctl restart nginx",
        rule="restarts-need-review",
        approvers=["oncall"],
        approvals=approvals,
        timeout_s=timeout,
        now=T0,
    )


async def test_one_approval_releases_a_hold(broker):
    hold = await _hold(broker)
    assert hold.id.startswith("h-") and hold.status is HoldStatus.PENDING
    assert [h.id for h in await broker.pending_holds()] == [hold.id]
    decided = await broker.decide_hold(hold.id, BOB, approve=True, reason="go", now=T0 + 5)
    assert decided.status is HoldStatus.APPROVED
    assert decided.approved_by == ["bob"]
    assert await broker.pending_holds() == []


async def test_the_requester_cannot_approve_their_own_hold(broker):
    hold = await _hold(broker)
    alice_oncall = Person("alice", frozenset({"oncall"}))
    with pytest.raises(DecisionRefused, match="cannot decide your own request"):
        await broker.decide_hold(hold.id, alice_oncall, approve=True, reason="", now=T0)
    assert (await broker.get_hold(hold.id)).status is HoldStatus.PENDING


async def test_only_approver_groups_decide(broker):
    hold = await _hold(broker)
    with pytest.raises(DecisionRefused, match=r"dave is not in an approver group .*oncall"):
        await broker.decide_hold(hold.id, DAVE, approve=True, reason="", now=T0)


async def test_two_of_two_needs_two_different_people(broker):
    hold = await _hold(broker, approvals=2)
    first = await broker.decide_hold(hold.id, BOB, approve=True, reason="ok", now=T0 + 1)
    assert first.status is HoldStatus.PENDING
    with pytest.raises(DecisionRefused, match=r"already approved .* 2 different approvers"):
        await broker.decide_hold(hold.id, BOB, approve=True, reason="again", now=T0 + 2)
    second = await broker.decide_hold(hold.id, CAROL, approve=True, reason="ok", now=T0 + 3)
    assert second.status is HoldStatus.APPROVED
    assert second.approved_by == ["bob", "carol"]


async def test_one_denial_ends_it_and_needs_a_reason(broker):
    hold = await _hold(broker, approvals=2)
    with pytest.raises(DecisionRefused, match="needs a reason"):
        await broker.decide_hold(hold.id, BOB, approve=False, reason=" ", now=T0)
    denied = await broker.decide_hold(hold.id, BOB, approve=False, reason="not during peak", now=T0)
    assert denied.status is HoldStatus.DENIED
    with pytest.raises(DecisionRefused, match="already denied"):
        await broker.decide_hold(hold.id, CAROL, approve=True, reason="", now=T0)


async def test_holds_expire_and_late_decisions_are_refused(broker):
    hold = await _hold(broker, timeout=600)
    assert await broker.expire_holds(T0 + 599) == []
    assert await broker.next_deadline() == T0 + 600
    with pytest.raises(DecisionRefused, match="already expired"):
        await broker.decide_hold(hold.id, BOB, approve=True, reason="", now=T0 + 601)
    assert (await broker.get_hold(hold.id)).status is HoldStatus.EXPIRED


async def test_withdrawn_by_the_requester(broker):
    hold = await _hold(broker)
    assert (
        await broker.withdraw_hold(hold.id, by="alice", now=T0 + 1)
    ).status is HoldStatus.WITHDRAWN
    with pytest.raises(DecisionRefused, match="already withdrawn"):
        await broker.decide_hold(hold.id, BOB, approve=True, reason="", now=T0 + 2)


async def test_pending_holds_survive_a_restart_and_dead_sessions_expire(tmp_path):
    before = ApprovalBroker(SqliteState.in_data_dir(tmp_path), "gw-1")
    kept = await _hold(before, session="alive")
    dropped = await _hold(before, session="gone")
    after = ApprovalBroker(SqliteState.in_data_dir(tmp_path), "gw-1")
    assert {h.id for h in await after.pending_holds()} == {kept.id, dropped.id}
    expired = await after.expire_holds(T0 + 1, live_sessions={"alive"})
    assert [h.id for h in expired] == [dropped.id]
    assert [h.id for h in await after.pending_holds()] == [kept.id]


async def test_grant_lifecycle(broker):
    with pytest.raises(DecisionRefused, match="needs a reason"):
        await broker.request_grant(
            user="alice", target="web1", duration_s=3600, reason="", approvers=["oncall"], now=T0
        )
    grant = await broker.request_grant(
        user="alice",
        target="web1",
        duration_s=3600,
        reason="incident 42",
        approvers=["oncall"],
        now=T0,
    )
    assert await broker.live_grant("alice", "web1", T0) is None
    with pytest.raises(DecisionRefused, match="your own request"):
        await broker.decide_grant(
            grant.id, Person("alice", frozenset({"oncall"})), approve=True, reason="", now=T0
        )
    active = await broker.decide_grant(grant.id, BOB, approve=True, reason="ok", now=T0 + 10)
    assert active.status is GrantStatus.ACTIVE and active.expires_at == T0 + 3610
    assert (await broker.live_grant("alice", "web1", T0 + 100)).id == grant.id
    assert await broker.live_grant("alice", "db1", T0 + 100) is None
    assert await broker.expire_grants(T0 + 3609) == []
    assert [g.id for g in await broker.expire_grants(T0 + 3610)] == [grant.id]
    assert await broker.live_grant("alice", "web1", T0 + 3611) is None


async def test_revoke_and_the_audit_log(broker):
    grant = await broker.request_grant(
        user="alice", target="web1", duration_s=60, reason="fix", approvers=["oncall"], now=T0
    )
    await broker.decide_grant(grant.id, BOB, approve=True, reason="ok", now=T0 + 1)
    with pytest.raises(DecisionRefused, match="dave may not revoke"):
        await broker.revoke_grant(grant.id, DAVE, reason="mine now", now=T0 + 2)
    await broker.revoke_grant(grant.id, CAROL, reason="done early", now=T0 + 2)
    assert await broker.live_grant("alice", "web1", T0 + 3) is None
    with pytest.raises(DecisionRefused, match="already revoked"):
        await broker.revoke_grant(grant.id, ALICE, reason="", now=T0 + 4)
    log = [(e.actor, e.action, e.subject) for e in await broker.audit_log()]
    assert log == [
        ("alice", "grant_requested", grant.id),
        ("bob", "grant_active", grant.id),
        ("carol", "grant_revoked", grant.id),
    ]


async def test_two_gateways_deciding_at_once_the_first_decision_wins(tmp_path):
    """Two brokers over one state file (two gateways sharing a store) decide one hold at the
    same moment: one decision is taken, the other is told who decided first."""
    here = ApprovalBroker(SqliteState.in_data_dir(tmp_path), "gw-1")
    there = ApprovalBroker(SqliteState.in_data_dir(tmp_path), "gw-2")
    hold = await _hold(here)
    results = await asyncio.gather(
        here.decide_hold(hold.id, BOB, approve=True, reason="go", now=T0 + 1),
        there.decide_hold(hold.id, CAROL, approve=False, reason="no", now=T0 + 1),
        return_exceptions=True,
    )
    (won,) = [r for r in results if not isinstance(r, BaseException)]
    (lost,) = [r for r in results if isinstance(r, BaseException)]
    assert isinstance(lost, DecisionRefused)
    assert f"already {won.status} (decided by {won.decisions[-1].by})" in str(lost)
    stored = await there.get_hold(hold.id)
    assert stored.status is won.status and len(stored.decisions) == 1
    actions = [e.action for e in await here.audit_log()]
    assert actions.count("hold_approve") + actions.count("hold_deny") == 1
