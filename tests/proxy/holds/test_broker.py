"""The approval broker's rules, over the real SQLite state store."""

from __future__ import annotations

import pytest

from proxy.holds.broker import ApprovalBroker, DecisionRefused, Person
from storage.state import GrantStatus, HoldStatus, SqliteState

ALICE = Person("alice", frozenset({"dev"}))
BOB = Person("bob", frozenset({"oncall"}))
CAROL = Person("carol", frozenset({"oncall", "dev"}))
DAVE = Person("dave", frozenset({"dev"}))
T0 = 1_800_000_000.0


@pytest.fixture
def broker(tmp_path) -> ApprovalBroker:
    return ApprovalBroker(SqliteState.in_data_dir(tmp_path), "gw-1")


def _hold(broker: ApprovalBroker, approvals: int = 1, session: str = "s1", timeout: float = 600):
    return broker.request_hold(
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


def test_one_approval_releases_a_hold(broker):
    hold = _hold(broker)
    assert hold.id.startswith("h-") and hold.status is HoldStatus.PENDING
    assert [h.id for h in broker.pending_holds()] == [hold.id]
    decided = broker.decide_hold(hold.id, BOB, approve=True, reason="go", now=T0 + 5)
    assert decided.status is HoldStatus.APPROVED
    assert decided.approved_by == ["bob"]
    assert broker.pending_holds() == []


def test_the_requester_cannot_approve_their_own_hold(broker):
    hold = _hold(broker)
    alice_oncall = Person("alice", frozenset({"oncall"}))
    with pytest.raises(DecisionRefused, match="cannot decide your own request"):
        broker.decide_hold(hold.id, alice_oncall, approve=True, reason="", now=T0)
    assert broker.store.get_hold(hold.id).status is HoldStatus.PENDING


def test_only_approver_groups_decide(broker):
    hold = _hold(broker)
    with pytest.raises(DecisionRefused, match=r"dave is not in an approver group .*oncall"):
        broker.decide_hold(hold.id, DAVE, approve=True, reason="", now=T0)


def test_two_of_two_needs_two_different_people(broker):
    hold = _hold(broker, approvals=2)
    first = broker.decide_hold(hold.id, BOB, approve=True, reason="ok", now=T0 + 1)
    assert first.status is HoldStatus.PENDING
    with pytest.raises(DecisionRefused, match=r"already approved .* 2 different approvers"):
        broker.decide_hold(hold.id, BOB, approve=True, reason="again", now=T0 + 2)
    second = broker.decide_hold(hold.id, CAROL, approve=True, reason="ok", now=T0 + 3)
    assert second.status is HoldStatus.APPROVED
    assert second.approved_by == ["bob", "carol"]


def test_one_denial_ends_it_and_needs_a_reason(broker):
    hold = _hold(broker, approvals=2)
    with pytest.raises(DecisionRefused, match="needs a reason"):
        broker.decide_hold(hold.id, BOB, approve=False, reason=" ", now=T0)
    denied = broker.decide_hold(hold.id, BOB, approve=False, reason="not during peak", now=T0)
    assert denied.status is HoldStatus.DENIED
    with pytest.raises(DecisionRefused, match="already denied"):
        broker.decide_hold(hold.id, CAROL, approve=True, reason="", now=T0)


def test_holds_expire_and_late_decisions_are_refused(broker):
    hold = _hold(broker, timeout=600)
    assert broker.expire_holds(T0 + 599) == []
    assert broker.next_deadline() == T0 + 600
    with pytest.raises(DecisionRefused, match="already expired"):
        broker.decide_hold(hold.id, BOB, approve=True, reason="", now=T0 + 601)
    assert broker.store.get_hold(hold.id).status is HoldStatus.EXPIRED


def test_withdrawn_by_the_requester(broker):
    hold = _hold(broker)
    assert broker.withdraw_hold(hold.id, by="alice", now=T0 + 1).status is HoldStatus.WITHDRAWN
    with pytest.raises(DecisionRefused, match="already withdrawn"):
        broker.decide_hold(hold.id, BOB, approve=True, reason="", now=T0 + 2)


def test_pending_holds_survive_a_restart_and_dead_sessions_expire(tmp_path):
    before = ApprovalBroker(SqliteState.in_data_dir(tmp_path), "gw-1")
    kept = _hold(before, session="alive")
    dropped = _hold(before, session="gone")
    after = ApprovalBroker(SqliteState.in_data_dir(tmp_path), "gw-1")
    assert {h.id for h in after.pending_holds()} == {kept.id, dropped.id}
    expired = after.expire_holds(T0 + 1, live_sessions={"alive"})
    assert [h.id for h in expired] == [dropped.id]
    assert [h.id for h in after.pending_holds()] == [kept.id]


def test_grant_lifecycle(broker):
    with pytest.raises(DecisionRefused, match="needs a reason"):
        broker.request_grant(
            user="alice", target="web1", duration_s=3600, reason="", approvers=["oncall"], now=T0
        )
    grant = broker.request_grant(
        user="alice",
        target="web1",
        duration_s=3600,
        reason="incident 42",
        approvers=["oncall"],
        now=T0,
    )
    assert broker.live_grant("alice", "web1", T0) is None
    with pytest.raises(DecisionRefused, match="your own request"):
        broker.decide_grant(
            grant.id, Person("alice", frozenset({"oncall"})), approve=True, reason="", now=T0
        )
    active = broker.decide_grant(grant.id, BOB, approve=True, reason="ok", now=T0 + 10)
    assert active.status is GrantStatus.ACTIVE and active.expires_at == T0 + 3610
    assert broker.live_grant("alice", "web1", T0 + 100).id == grant.id
    assert broker.live_grant("alice", "db1", T0 + 100) is None
    assert broker.expire_grants(T0 + 3609) == []
    assert [g.id for g in broker.expire_grants(T0 + 3610)] == [grant.id]
    assert broker.live_grant("alice", "web1", T0 + 3611) is None


def test_revoke_and_the_audit_log(broker):
    grant = broker.request_grant(
        user="alice", target="web1", duration_s=60, reason="fix", approvers=["oncall"], now=T0
    )
    broker.decide_grant(grant.id, BOB, approve=True, reason="ok", now=T0 + 1)
    with pytest.raises(DecisionRefused, match="dave may not revoke"):
        broker.revoke_grant(grant.id, DAVE, reason="mine now", now=T0 + 2)
    broker.revoke_grant(grant.id, CAROL, reason="done early", now=T0 + 2)
    assert broker.live_grant("alice", "web1", T0 + 3) is None
    with pytest.raises(DecisionRefused, match="already revoked"):
        broker.revoke_grant(grant.id, ALICE, reason="", now=T0 + 4)
    log = [(e.actor, e.action, e.subject) for e in broker.store.audit_log()]
    assert log == [
        ("alice", "grant_requested", grant.id),
        ("bob", "grant_active", grant.id),
        ("carol", "grant_revoked", grant.id),
    ]
