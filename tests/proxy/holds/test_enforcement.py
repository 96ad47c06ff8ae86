"""Verdicts carried out: recorded, refused with a reason, or held until an approver decides."""

from __future__ import annotations

import asyncio
import getpass
import json
import time
from dataclasses import dataclass

import pytest

from proxy.holds.broker import ApprovalBroker, Person
from proxy.holds.control import ControlServer, socket_path
from proxy.holds.enforcement import Enforcer
from proxy.holds.service import ApprovalService
from proxy.policy import Action, Basis, Review, Verdict
from storage.reader import RecordingReader
from storage.recorder import new_session_id, start_recording
from storage.schema import EventType
from storage.sqlite_state import SqliteState
from storage.writer import RecordingWriter
from tests.storage.helpers import make_header


@dataclass
class Session:
    """A session as enforcement sees it, recording into a real recording."""

    writer: RecordingWriter
    id: str

    def record_verdict(self, channel: int, verdict: Verdict) -> bool:
        self.writer.record(EventType.VERDICT, channel, *verdict.recorded())
        return True

    def record_hold_requested(
        self, hold_id: str, command: str, rule: str, approvers: list[str]
    ) -> bool:
        self.writer.record(EventType.HOLD_REQUESTED, hold_id, command, rule, approvers)
        return True

    def record_hold_decided(self, hold_id: str, decision: str, by: str, reason: str) -> bool:
        self.writer.record(EventType.HOLD_DECIDED, hold_id, decision, by, reason)
        return True


@pytest.fixture
async def setup(tmp_path):
    control = ControlServer(
        socket_path(tmp_path), {getpass.getuser(): Person("bob", frozenset({"oncall"}))}.get
    )
    service = ApprovalService(ApprovalBroker(SqliteState.in_data_dir(tmp_path), "gw"), control)
    await control.start()
    await service.start()
    header = make_header(new_session_id(), started_at_us=time.time_ns() // 1000)
    session = Session(start_recording(tmp_path, header), header.session_id)
    yield Enforcer(service), session, service
    await service.stop()
    await control.stop()


REVIEW = Verdict(
    Action.REVIEW,
    Basis.RULE,
    "restarts need review",
    rule="restarts-need-review",
    command="systemctl restart nginx",
    review=Review(("oncall",), 1, 600),
)


def _events(session: Session):
    session.writer.close("done")
    with RecordingReader.open(session.writer.path) as reader:
        return [(e.name, e.fields) for e in reader.events()]


async def test_allow_and_deny_are_recorded(setup):
    enforcer, session, _ = setup
    allow = Verdict(Action.ALLOW, Basis.DEFAULT, "")
    assert (
        await enforcer.enforce(
            session, user="alice", target="web1", channel=1, command="ls", verdict=allow
        )
    ).allowed
    deny = Verdict(Action.DENY, Basis.RULE, "not here", rule="no-rm", command="rm -rf /")
    outcome = await enforcer.enforce(
        session, user="alice", target="web1", channel=1, command="rm -rf /", verdict=deny
    )
    assert not outcome.allowed
    assert outcome.message == "denied: deny by rule no-rm: rm -rf / (not here)"
    line = outcome.machine_line(deny)
    assert json.loads(line[line.index("{") :]) == {
        "verdict": "deny",
        "rule": "no-rm",
        "reason": outcome.message,
        "hold": None,
        "hold_status": None,
    }
    events = _events(session)
    assert [(n, f["action"], f["rule"]) for n, f in events if n == "verdict"] == [
        ("verdict", "allow", ""),
        ("verdict", "deny", "no-rm"),
    ]


async def test_a_hold_waits_tells_the_caller_and_records_the_decision(setup):
    enforcer, session, service = setup
    notes: list[str] = []
    task = asyncio.ensure_future(
        enforcer.enforce(
            session,
            user="alice",
            target="web1",
            channel=2,
            command="systemctl restart nginx",
            verdict=REVIEW,
            notify=notes.append,
        )
    )
    await asyncio.sleep(0.1)
    assert not task.done()
    (hold,) = await service.broker.pending_holds()
    assert notes == [
        f"held as {hold.id} by rule restarts-need-review: waiting for 1 approval(s) from "
        "oncall (expires in 10m)"
    ]
    await service.decide_hold(
        hold.id, Person("bob", frozenset({"oncall"})), approve=True, reason="fine"
    )
    outcome = await asyncio.wait_for(task, 5)
    assert outcome.allowed and outcome.message == f"{hold.id} approved by bob"
    names = [(n, f) for n, f in _events(session)]
    assert [n for n, _ in names][:3] == ["verdict", "hold_requested", "hold_decided"]
    assert names[2][1] == {
        "hold_id": hold.id,
        "decision": "approved",
        "by": "bob",
        "reason": "fine",
    }


async def test_a_cancelled_hold_is_recorded_as_withdrawn(setup):
    enforcer, session, _ = setup
    task = asyncio.ensure_future(
        enforcer.enforce(
            session,
            user="alice",
            target="web1",
            channel=2,
            command="systemctl restart nginx",
            verdict=REVIEW,
        )
    )
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    decided = [f for n, f in _events(session) if n == "hold_decided"]
    assert decided[0]["decision"] == "withdrawn"


async def test_review_without_an_approval_service_fails_closed(setup):
    _, session, _ = setup
    outcome = await Enforcer(None).enforce(
        session, user="alice", target="web1", channel=0, command="x", verdict=REVIEW
    )
    assert not outcome.allowed and "no approver can be reached" in outcome.message


async def test_review_with_no_approver_group_is_a_denial_that_says_so(setup):
    enforcer, session, service = setup
    unreviewable = Verdict(Action.REVIEW, Basis.UNPARSABLE, "", review=Review((), 1, 600))
    outcome = await enforcer.enforce(
        session, user="alice", target="web1", channel=0, command="x", verdict=unreviewable
    )
    assert not outcome.allowed
    assert "no approver group is configured" in outcome.message
    assert await service.broker.pending_holds() == []
