"""The statement timeline and the mask review of PostgreSQL sessions: on a real session through
the gateway, and on event sequences the gateway writes in rarer cases (several statements in
one query, an error that skips the rest)."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config import load_config
from replay.mask_review import review_sql, review_terminal
from replay.masking_view import load_current_masks
from replay.sql_timeline import SqlTimeline, build_sql_timeline
from storage.masking import MaskPolicy
from storage.reader import RecordingReader
from storage.schema import Event, EventType
from tests.replay.pg_session import (
    APPROVED_INSERT,
    DENIED_INSERT,
    SECRETS_QUERY,
    RecordedSession,
    recorded_session,
    todays_config,
)


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory, postgres: tuple[str, int]) -> RecordedSession:
    return recorded_session(tmp_path_factory.mktemp("pg-session"))


def _events(session: RecordedSession) -> list[Event]:
    with RecordingReader.open(session.recording) as reader:
        return list(reader.events())


def test_every_statement_of_a_real_session_with_its_verdict_and_answer(session):
    timeline = build_sql_timeline(_events(session))
    shown = [(s.sql.split()[0], s.verdict_label, s.rows, s.sqlstate) for s in timeline.statements]
    assert shown == [
        ("create", "allowed", 0, ""),
        ("select", "allowed", 3, ""),
        ("select", "allowed", 1, ""),
        ("select", "allowed", None, "22012"),
        ("truncate", "denied", None, "42501"),
        ("insert", "held→approved", 1, ""),
        ("insert", "held→denied", None, "42501"),
        ("select", "allowed", 1, ""),
    ]
    _, secrets, param, division, truncate, approved, denied, _ = timeline.statements
    # recorded through the session's masks (issue 12, class 13): the card in the text too
    assert secrets.sql == SECRETS_QUERY.replace("4111 1111 1111 1111", "**** **** **** 1111")
    assert secrets.columns == ["name", "password_hash", "note"]
    assert secrets.sample[0] == ["user1", "********", "paid with **** **** **** 1111"]
    assert param.params == ["hello"] and param.sample == [["HELLO"]]
    assert division.error == "division by zero" and division.failed and not division.denied
    assert truncate.rule == "no-truncate" and truncate.rule_message.startswith("truncate needs")
    assert truncate.denied and not truncate.failed
    assert approved.sql == APPROVED_INSERT and approved.hold_id.startswith("h-")
    assert (approved.decided_by, approved.decision_reason) == ("bob", "ticket 42")
    assert approved.approvers == ["oncall"] and approved.rule == "review-writes"
    assert denied.sql == DENIED_INSERT and denied.denied
    assert denied.decision_reason == "not during the freeze"
    assert all(s.elapsed_us is not None and s.elapsed_us >= 0 for s in timeline.statements)


def test_recorded_row_masks_name_their_column_and_row(session):
    timeline = build_sql_timeline(_events(session))
    masks = timeline.statements[1].masks
    assert [(m.rule, m.column, m.row) for m in masks] == [
        ("passwords", "password_hash", 1),
        ("cards", "note", 1),
        ("passwords", "password_hash", 2),
        ("cards", "note", 2),
        ("passwords", "password_hash", 3),
        ("cards", "note", 3),
    ]
    # the same card everywhere: one stable token; different passwords: different tokens
    assert len({m.token for m in masks if m.rule == "cards"}) == 1
    assert len({m.token for m in masks if m.rule == "passwords"}) == 3
    assert not any(m.today for m in masks)


def test_todays_rules_mask_the_sql_text_and_say_so(session):
    masks = load_current_masks(load_config(todays_config(session)))
    with RecordingReader.open(session.recording) as reader:
        masker = masks.masker_for(reader.header)
        timeline = build_sql_timeline(reader.events(), masker)
    approved = timeline.statements[5]
    assert "carol@example.org" not in approved.sql and "insert into h values (1, '" in approved.sql
    [today] = [m for m in approved.masks if m.today]
    assert (today.rule, today.place, today.length) == ("emails", "statement", 17)
    review = review_sql(timeline)
    counts = {c.rule: (c.recorded, c.today) for c in review.counts()}
    # the card in the query's own text was masked as it was recorded, and the masked columns
    # are not counted again: only the e-mails are today's
    assert counts == {"passwords": (3, 0), "cards": (3, 0), "emails": (0, 2)}
    where = [e.where for e in review.entries if e.today]
    assert where == [
        f"statement 6, SQL text, character {APPROVED_INSERT.index('carol')}",
        f"statement 7, SQL text, character {DENIED_INSERT.index('dave')}",
    ]


def test_review_of_a_sql_session_points_at_statements(session):
    review = review_sql(build_sql_timeline(_events(session)))
    assert {e.statement for e in review.entries} == {1}
    assert review.entries[0].where == "statement 2, column password_hash, row 1"
    assert review.entries[1].where == "statement 2, column note, row 1"


def test_find_and_search_move_between_statements(session):
    timeline = build_sql_timeline(_events(session))
    assert timeline.find(-1, "hold") == 5
    assert timeline.find(5, "hold") == 6
    assert timeline.find(6, "hold") is None
    assert timeline.find(0, "deny") == 4 and timeline.find(4, "deny") == 6
    assert timeline.find(0, "error") == 3 and timeline.find(3, "error") is None
    assert timeline.find(7, "deny", -1) == 6
    assert (timeline.count("hold"), timeline.count("deny"), timeline.count("error")) == (2, 2, 1)
    assert timeline.search("INSERT", 0) == 5
    assert timeline.search("insert", 5) == 6
    assert timeline.search("insert", 6) == 5  # wraps around
    assert timeline.search("no such text", 0) is None
    with pytest.raises(ValueError, match="unknown kind"):
        timeline.find(0, "warning")


def _e(kind: EventType, time_us: int, **fields: object) -> Event:
    return Event(kind, time_us, dict(fields))


def test_a_query_of_several_statements_is_judged_whole_and_an_error_skips_the_rest():
    events = [
        _e(EventType.SQL_STATEMENT, 10, statement="select 1", params=[]),
        _e(EventType.SQL_STATEMENT, 11, statement="delete from t", params=[]),
        _e(EventType.SQL_STATEMENT, 12, statement="select 2", params=[]),
        _e(EventType.VERDICT, 13, channel=0, action="review", rule="writes", message=""),
        _e(
            EventType.HOLD_REQUESTED,
            14,
            hold_id="h-1",
            command="...",
            rule="writes",
            approvers=["oncall"],
        ),
        _e(EventType.HOLD_DECIDED, 90, hold_id="h-1", decision="approved", by="bob", reason="ok"),
        _e(EventType.SQL_RESULT, 95, columns=["?column?"], rows=1, sample=[["1"]], duration_us=4),
        _e(EventType.SQL_ERROR, 96, sqlstate="23503", message="violates foreign key"),
        _e(EventType.SQL_STATEMENT, 200, statement="select 3", params=[None, b"\x00\x01"]),
        _e(EventType.SQL_RESULT, 201, columns=[], rows=1, sample=[["3"]], duration_us=1),
    ]
    timeline = build_sql_timeline(events)
    first, delete, second, third = timeline.statements
    assert [s.verdict_label for s in timeline.statements[:3]] == ["held→approved"] * 3
    assert first.rows == 1 and first.duration_us == 4
    assert delete.failed and delete.sqlstate == "23503" and delete.elapsed_us == 96 - 11
    assert second.skipped and second.rows is None and not second.error
    assert third.verdict_label == "allowed" and third.params == [None, b"\x00\x01"]
    assert third.rows == 1 and not third.skipped


def test_the_gateway_records_the_column_of_each_row_mask(session):
    masks = [e for e in _events(session) if e.type is EventType.MASK]
    assert masks and {m["column"] for m in masks} == {"password_hash", "note"}
    assert [m["column"] for m in masks if m["rule"] == "passwords"] == ["password_hash"] * 3


def test_the_recorded_column_wins_over_what_the_sample_suggests():
    # Two cells fully masked: the sample cannot tell which act hid which. Acts of the same
    # row come in column order from the gateway, but the recorded column is the authority.
    sample = [["********", "********"]]
    events = [
        _e(EventType.SQL_STATEMENT, 1, statement="select a, b", params=[]),
        _e(EventType.MASK, 2, channel=0, rule="r-b", position=1, length=3, token="t1", column="b"),
        _e(EventType.MASK, 3, channel=0, rule="r-a", position=1, length=3, token="t2", column="a"),
        _e(EventType.SQL_RESULT, 4, columns=["a", "b"], rows=1, sample=sample, duration_us=1),
    ]
    [statement] = build_sql_timeline(events).statements
    assert [(m.rule, m.column) for m in statement.masks] == [("r-b", "b"), ("r-a", "a")]
    assert [e.where for e in review_sql(build_sql_timeline(events)).entries] == [
        "statement 1, column b, row 1",
        "statement 1, column a, row 1",
    ]
    # The same events as an older gateway wrote them (no column): read off the sample.
    old = [
        Event(e.type, e.time_us, {k: v for k, v in e.fields.items() if k != "column"})
        for e in events
    ]
    [statement] = build_sql_timeline(old).statements
    assert [(m.rule, m.column) for m in statement.masks] == [("r-b", "a"), ("r-a", "b")]


def test_an_explicit_allow_rule_and_a_verdict_after_a_default_allow():
    events = [
        _e(EventType.SQL_STATEMENT, 1, statement="select 1", params=[]),
        _e(EventType.SQL_RESULT, 2, columns=[], rows=1, sample=[], duration_us=1),
        _e(EventType.SQL_STATEMENT, 3, statement="show all", params=[]),
        _e(EventType.VERDICT, 4, channel=0, action="allow", rule="reads-ok", message="fine"),
        _e(EventType.SQL_RESULT, 5, columns=[], rows=9, sample=[], duration_us=1),
    ]
    first, second = build_sql_timeline(events).statements
    assert (first.verdict_label, first.rule) == ("allowed", "")
    assert (second.verdict_label, second.rule, second.rule_message) == (
        "allowed",
        "reads-ok",
        "fine",
    )


def test_a_token_in_a_masked_cell_names_the_column_whatever_the_order():
    events = [
        _e(EventType.SQL_STATEMENT, 1, statement="select a, b", params=[]),
        _e(
            EventType.MASK, 2, channel=0, rule="ids", position=1, length=5, token="tok_aaaaaaaaaaaa"
        ),
        _e(
            EventType.SQL_RESULT,
            3,
            columns=["a", "b"],
            rows=1,
            sample=[["x", "id tok_aaaaaaaaaaaa"]],
            duration_us=1,
        ),
    ]
    [statement] = build_sql_timeline(events).statements
    [mask] = statement.masks
    assert (mask.column, mask.row, mask.place) == ("b", 1, "result")


def test_masks_before_an_error_are_in_its_text():
    events = [
        _e(EventType.SQL_STATEMENT, 1, statement="insert ...", params=[]),
        _e(EventType.MASK, 2, channel=0, rule="emails", position=20, length=9, token="tok_1"),
        _e(EventType.SQL_ERROR, 3, sqlstate="23505", message="Key (email)=(*********)"),
    ]
    timeline = build_sql_timeline(events)
    assert [e.where for e in review_sql(timeline).entries] == ["statement 1, error or notice text"]


def test_an_empty_timeline():
    timeline = SqlTimeline()
    assert timeline.find(-1, "hold") is None and timeline.search("x", 0) is None
    assert review_sql(timeline).entries == []


def test_terminal_review_lists_recorded_masks_and_what_todays_rules_add():
    policy = MaskPolicy.from_raw_config(
        {
            "masks": [
                {"name": "cards", "detector": "credit_card", "style": "last4"},
                # finds `password=*******` again: what it masked when recording
                {"name": "passwords", "detector": "password_assignment"},
            ]
        },
        Path("today.toml"),
        b"s" * 32,
    )
    events = [
        _e(EventType.MASK, 5, channel=0, rule="passwords", position=9, length=7, token="tok_p"),
        _e(EventType.OUTPUT, 6, channel=0, data=b"password=******* ok\r\n"),
        _e(EventType.OUTPUT, 1_000_000, channel=0, data=b"card 4111 1111 1111 1111 done\r\n"),
    ]
    plain = review_terminal(events)
    assert [(e.rule, e.where, e.length, e.event_index) for e in plain.entries] == [
        ("passwords", "output, channel 0, byte 9", 7, 0)
    ]
    review = review_terminal(events, policy.for_caller(()))
    assert [(e.rule, e.today, e.event_index) for e in review.entries] == [
        ("passwords", False, 0),
        ("cards", True, 2),
    ]
    card = review.entries[1]
    assert card.where.startswith("output, channel 0, byte ") and card.length == 19
    assert card.token.startswith("tok_") and card.time_us == 1_000_000
    assert [(c.rule, c.recorded, c.today) for c in review.counts()] == [
        ("cards", 0, 1),
        ("passwords", 1, 0),
    ]
