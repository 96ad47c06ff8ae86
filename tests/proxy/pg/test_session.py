"""The sans-IO relay: bytes in, bytes and commands out, no sockets."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.pg import wire
from proxy.pg.classify import Classifier
from proxy.pg.server import PgTarget, make_decider
from proxy.pg.session import End, Judge, PgSession, UnparsableMode
from proxy.policy import Caller, parse_policy
from storage.schema import EventType

RULES = {
    "rules": [
        {"name": "no-ddl", "sql": ["ddl"], "action": "deny", "message": "no DDL"},
        {"name": "review-writes", "sql": ["write"], "action": "review", "approvers": ["ops"]},
    ]
}


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[EventType, tuple[Any, ...]]] = []
        self.ok = True

    def __call__(self, event: EventType, *fields: object) -> bool:
        self.events.append((event, fields))
        return self.ok

    def of(self, kind: EventType) -> list[tuple[Any, ...]]:
        return [fields for event, fields in self.events if event is kind]


def make(read_only: bool = False, **kwargs: Any) -> tuple[PgSession, Recorder]:
    policy = parse_policy(RULES, "test.toml")
    target = PgTarget("db", "127.0.0.1", 5432, "db", "gw", ("*",), read_only=read_only)
    decide = make_decider(policy, Caller("alice", frozenset({"dev"})), target)
    recorder = Recorder()
    clock = iter(range(0, 10**12, 1000))
    session = PgSession(decide, Classifier(), recorder, clock_ns=lambda: next(clock), **kwargs)
    return session, recorder


def up(session: PgSession) -> bytes:
    data = bytes(session.to_upstream)
    session.to_upstream.clear()
    return data


def down(session: PgSession) -> list[wire.Message]:
    reader = wire.MessageReader()
    reader.feed(bytes(session.to_client))
    session.to_client.clear()
    return [wire.decode_backend(item) for item in reader]


def select_reply(value: str = "1") -> bytes:
    return b"".join(
        m.encode()
        for m in (
            wire.RowDescription((wire.Column("x"),)),
            wire.DataRow((value.encode(),)),
            wire.CommandComplete("SELECT 1"),
            wire.ReadyForQuery("I"),
        )
    )


def test_allowed_query_is_forwarded_unchanged_and_recorded() -> None:
    session, recorder = make()
    query = wire.Query("select 1 as x").encode()
    session.client_data(query)
    assert up(session) == query
    session.upstream_data(select_reply())
    assert [type(m).__name__ for m in down(session)] == [
        "RowDescription",
        "DataRow",
        "CommandComplete",
        "ReadyForQuery",
    ]
    assert recorder.of(EventType.SQL_STATEMENT) == [("select 1 as x", [])]
    columns, rows, sample, duration = recorder.of(EventType.SQL_RESULT)[0]
    assert (columns, rows, sample) == (["x"], 1, [["1"]]) and duration > 0
    assert not recorder.of(EventType.VERDICT)  # the default allow is not a verdict event


def test_every_message_cut_at_every_byte_through_the_session() -> None:
    data = (
        wire.Query("select 'é'").encode()
        + wire.Parse("", "select $1::int").encode()
        + wire.Bind("", "", (), (b"5",)).encode()
        + wire.Execute("").encode()
        + wire.Sync().encode()
    )
    reply = select_reply() + b"".join(
        m.encode()
        for m in (
            wire.ParseComplete(),
            wire.BindComplete(),
            wire.DataRow((b"5",)),
            wire.CommandComplete("SELECT 1"),
            wire.ReadyForQuery("I"),
        )
    )
    for cut in range(len(data) + 1):
        session, recorder = make()
        session.client_data(data[:cut])
        session.client_data(data[cut:])
        assert up(session) == data
        for index in range(0, len(reply), 7):
            session.upstream_data(reply[index : index + 7])
        assert bytes(session.to_client) == reply
        assert len(recorder.of(EventType.SQL_RESULT)) == 2
        assert recorder.of(EventType.SQL_STATEMENT)[1] == ("select $1::int", ["5"])
    for cut in range(len(reply) + 1):  # and the answers, cut at every byte
        session, recorder = make()
        session.client_data(data)
        session.upstream_data(reply[:cut])
        session.upstream_data(reply[cut:])
        assert bytes(session.to_client) == reply
        assert [r[1] for r in recorder.of(EventType.SQL_RESULT)] == [1, 1]


def test_denied_query_waits_for_earlier_answers_then_errors() -> None:
    session, recorder = make()
    session.client_data(wire.Query("select 1").encode() + wire.Query("drop table t").encode())
    commands = session.take_commands()
    assert [type(c) for c in commands] == [Judge]
    assert up(session) == wire.Query("select 1").encode()
    session.judged(False, "hoop: no DDL (rule no-ddl)")
    assert down(session) == []  # the first query's answer has not come yet
    # The first query may have opened a transaction: the upstream is made to fail it, with
    # a Describe of a portal that does not exist (nothing of the denied statement is sent).
    aborting = up(session)
    assert aborting.startswith(b"D") and b"drop" not in aborting
    session.upstream_data(select_reply())
    assert [type(m).__name__ for m in down(session)][-1] == "ReadyForQuery"
    session.upstream_data(
        wire.ErrorResponse.make("34000", "portal does not exist").encode()
        + wire.ReadyForQuery("I").encode()
    )
    messages = down(session)
    assert [type(m).__name__ for m in messages] == ["ErrorResponse", "ReadyForQuery"]
    error = messages[-2]
    assert isinstance(error, wire.ErrorResponse) and error.sqlstate == "42501"
    assert "no DDL" in error.message
    assert up(session) == b""
    assert recorder.of(EventType.SQL_ERROR) == [("42501", "hoop: no DDL (rule no-ddl)")]


def test_extended_refusal_discards_until_sync() -> None:
    session, _ = make()
    allowed = wire.Parse("a", "select 1").encode() + wire.Bind("", "a").encode()
    denied = wire.Parse("b", "drop table t").encode()
    rest = wire.Bind("", "b").encode() + wire.Execute("").encode() + wire.Sync().encode()
    session.client_data(allowed + denied + rest)
    assert [type(c) for c in session.take_commands()] == [Judge]
    assert up(session) == allowed
    session.judged(False, "hoop: no DDL")
    # The upstream has earlier messages of the batch: the gateway makes the batch fail there
    # (a Describe of a portal that does not exist) so that its Sync rolls them back, and keeps
    # that error and the ReadyForQuery to itself.
    sent = up(session)
    assert sent.endswith(wire.Sync().encode()) and sent.startswith(b"D")
    session.upstream_data(
        wire.ParseComplete().encode()
        + wire.BindComplete().encode()
        + wire.ErrorResponse.make("34000", 'portal "x" does not exist').encode()
        + wire.ReadyForQuery("I").encode()
    )
    messages = down(session)
    names = [type(m).__name__ for m in messages]
    assert names == ["ParseComplete", "BindComplete", "ErrorResponse", "ReadyForQuery"]
    assert isinstance(messages[2], wire.ErrorResponse) and messages[2].sqlstate == "42501"
    # The connection goes on.
    session.client_data(wire.Query("select 2").encode())
    assert up(session) == wire.Query("select 2").encode()


def test_review_pauses_then_runs_in_order() -> None:
    session, _recorder = make()
    session.client_data(wire.Query("insert into t values (1)").encode())
    (judge,) = session.take_commands()
    assert isinstance(judge, Judge) and judge.verdict.rule == "review-writes"
    assert session.paused
    session.client_data(wire.Query("select 1").encode())  # queued behind the hold
    assert up(session) == b""
    session.notice("hoop: held as H-1")
    assert [type(m).__name__ for m in down(session)] == ["NoticeResponse"]
    session.judged(True, "hoop: H-1 approved by bob")
    assert up(session) == (
        wire.Query("insert into t values (1)").encode() + wire.Query("select 1").encode()
    )
    assert [type(m).__name__ for m in down(session)] == ["NoticeResponse"]


def test_prepared_statement_held_at_each_execute() -> None:
    session, _ = make()
    parse = wire.Parse("ins", "insert into t values ($1)").encode()
    session.client_data(parse + wire.Sync().encode())
    assert session.take_commands() == []  # preparing runs nothing
    assert up(session) == parse + wire.Sync().encode()
    session.upstream_data(wire.ParseComplete().encode() + wire.ReadyForQuery("I").encode())
    down(session)
    for _ in range(2):
        bind = wire.Bind("", "ins", (), (b"1",)).encode() + wire.Execute("").encode()
        session.client_data(bind + wire.Sync().encode())
        (judge,) = session.take_commands()
        assert isinstance(judge, Judge)
        assert up(session) == wire.Bind("", "ins", (), (b"1",)).encode()
        session.judged(True)
        assert up(session) == wire.Execute("").encode() + wire.Sync().encode()


def test_read_only_target_denies_writes_before_rules() -> None:
    session, _ = make(read_only=True)
    session.client_data(wire.Query("set transaction read write").encode())
    (judge,) = session.take_commands()
    assert isinstance(judge, Judge)
    assert judge.verdict.rule == "read-only-target" and "read_write" in judge.verdict.message


def test_upstream_error_in_extended_protocol_skips_to_sync() -> None:
    session, recorder = make()
    data = (
        wire.Parse("", "select 1/0").encode()
        + wire.Bind("", "").encode()
        + wire.Execute("").encode()
        + wire.Sync().encode()
    )
    session.client_data(data)
    up(session)
    session.upstream_data(
        wire.ParseComplete().encode()
        + wire.BindComplete().encode()
        + wire.ErrorResponse.make("22012", "division by zero").encode()
        + wire.ReadyForQuery("I").encode()
    )
    assert [type(m).__name__ for m in down(session)][-1] == "ReadyForQuery"
    assert recorder.of(EventType.SQL_ERROR) == [("22012", "division by zero")]
    session.client_data(wire.Query("drop table t").encode())
    session.judged(False, "no")
    assert [type(m).__name__ for m in down(session)] == ["ErrorResponse", "ReadyForQuery"]


def test_gigabyte_claim_and_unknown_types_end_with_fatal() -> None:
    for data in (b"Q" + struct.pack("!I", 0x40000000), b"z\x00\x00\x00\x04"):
        session, _ = make()
        session.client_data(data)
        (error,) = down(session)
        assert isinstance(error, wire.ErrorResponse)
        assert error.sqlstate == "08P01" and error.get(ord("S")) == "FATAL"
        assert [type(c) for c in session.take_commands()] == [End]
        assert up(session) == b""


def test_recording_failure_fails_closed() -> None:
    session, recorder = make()
    recorder.ok = False
    session.client_data(wire.Query("select 1").encode())
    assert up(session) == b""
    (error,) = down(session)
    assert isinstance(error, wire.ErrorResponse) and error.sqlstate == "58030"
    assert session.closed


def test_fast_path_function_call_is_refused() -> None:
    session, _ = make()
    session.client_data(wire.FunctionCall(b"\x00\x00\x0b\xe4\x00\x00\x00\x00\x00\x00").encode())
    assert up(session) == b""
    names = [type(m).__name__ for m in down(session)]
    assert names == ["ErrorResponse", "ReadyForQuery"]


@pytest.mark.parametrize("mode", [UnparsableMode.SYNTAX_ERROR, UnparsableMode.POLICY])
def test_unparsable(mode: UnparsableMode) -> None:
    session, _ = make(unparsable=mode)
    session.client_data(wire.Query("selec 1").encode())
    if mode is UnparsableMode.SYNTAX_ERROR:
        error, _ready = down(session)
        assert isinstance(error, wire.ErrorResponse) and error.sqlstate == "42601"
        assert up(session) == b""
    else:
        (judge,) = session.take_commands()
        assert isinstance(judge, Judge)  # [policy] unparsable = review by default
        assert judge.verdict.action.value == "review"


def test_copy_in_passes_through() -> None:
    session, recorder = make()
    session.client_data(wire.Query("copy t from stdin").encode())
    (_judge,) = session.take_commands()  # copy_in is a write: held by review-writes
    session.judged(True)
    up(session)
    session.upstream_data(wire.CopyInResponse(0, (0,)).encode())
    assert [type(m).__name__ for m in down(session)] == ["CopyInResponse"]
    data = wire.CopyData(b"1\n").encode() + wire.CopyDone().encode()
    session.client_data(data)
    assert up(session) == data
    session.upstream_data(
        wire.CommandComplete("COPY 1").encode() + wire.ReadyForQuery("I").encode()
    )
    assert recorder.of(EventType.SQL_RESULT)[0][1] == 1


_frames = st.lists(
    st.tuples(st.sampled_from(b"QPBDESHCdcfFXpZTtnN12s3IAKRGvz"), st.binary(max_size=40)),
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(_frames, _frames, st.binary(max_size=60))
def test_fuzzed_traffic_never_escapes(
    client: list[tuple[int, bytes]], server: list[tuple[int, bytes]], garbage: bytes
) -> None:
    session, _ = make()
    data = b"".join(wire.frame(code, body) for code, body in client) + garbage
    for index in range(0, len(data), 13):
        session.client_data(data[index : index + 13])
        for command in session.take_commands():
            if isinstance(command, Judge):
                session.judged(False, "no")
    session.upstream_data(b"".join(wire.frame(code, body) for code, body in server) + garbage)
    # Whatever happened, the client got well-formed messages.
    reader = wire.MessageReader()
    reader.feed(bytes(session.to_client))
    list(reader)
    assert reader.buffered == 0


def _answer_query(session: PgSession, tag: str) -> None:
    session.upstream_data(wire.CommandComplete(tag).encode() + wire.ReadyForQuery("I").encode())
    down(session)


def test_sql_execute_inherits_the_verdict_of_the_prepared_body() -> None:
    session, _ = make()
    session.client_data(wire.Query("prepare del as delete from t where id = $1").encode())
    (judge,) = session.take_commands()
    assert isinstance(judge, Judge) and judge.verdict.rule == "review-writes"
    session.judged(True)
    up(session)
    _answer_query(session, "PREPARE")
    session.client_data(wire.Query("prepare one as select 1").encode())
    assert session.take_commands() == []
    up(session)
    _answer_query(session, "PREPARE")
    # `execute one` and `execute del` share a fingerprint: the verdict is not shared.
    session.client_data(wire.Query("execute one").encode())
    assert session.take_commands() == [] and up(session) == wire.Query("execute one").encode()
    _answer_query(session, "SELECT 1")
    session.client_data(wire.Query("execute del(1)").encode())
    (judge,) = session.take_commands()
    assert isinstance(judge, Judge) and judge.verdict.rule == "review-writes"
    session.judged(False, "no")
    assert up(session) == b""
    down(session)
    # Anywhere an EXECUTE sits.
    session.client_data(wire.Query("explain analyze execute del(2)").encode())
    (judge,) = session.take_commands()
    assert isinstance(judge, Judge)
    session.judged(False, "no")
    down(session)


def test_execute_of_a_protocol_prepared_statement_and_of_unknown_names() -> None:
    session, _ = make()
    session.client_data(wire.Parse("stmt1", "delete from t").encode() + wire.Sync().encode())
    assert session.take_commands() == []  # review: held at each execution
    up(session)
    session.upstream_data(wire.ParseComplete().encode() + wire.ReadyForQuery("I").encode())
    down(session)
    session.client_data(wire.Query("execute stmt1").encode())
    (judge,) = session.take_commands()
    assert isinstance(judge, Judge) and judge.verdict.rule == "review-writes"
    session.judged(False, "no")
    down(session)
    session.client_data(wire.Query("execute nobody_prepared_this").encode())
    (judge,) = session.take_commands()
    assert judge.verdict.action.value == "deny" and "not known" in judge.verdict.message
    session.judged(False, "no")
    assert up(session) == b""
    down(session)
    # In one string, a PREPARE counts for the EXECUTE after it.
    session.client_data(wire.Query("prepare two as select 2; execute two").encode())
    assert session.take_commands() == []


def test_deallocate_forgets_once_it_succeeded() -> None:
    session, _ = make()
    session.client_data(wire.Query("prepare one as select 1").encode())
    up(session)
    _answer_query(session, "PREPARE")
    session.client_data(wire.Query("deallocate one").encode())
    up(session)
    session.upstream_data(
        wire.ErrorResponse.make("25P02", "current transaction is aborted").encode()
        + wire.ReadyForQuery("E").encode()
    )
    down(session)
    session.client_data(wire.Query("execute one").encode())  # the failed DEALLOCATE kept it
    assert session.take_commands() == []
    up(session)
    _answer_query(session, "SELECT 1")
    session.client_data(wire.Query("deallocate one").encode())
    up(session)
    _answer_query(session, "DEALLOCATE")
    session.client_data(wire.Query("execute one").encode())
    (judge,) = session.take_commands()
    assert judge.verdict.action.value == "deny"


def test_a_portal_runs_what_it_was_bound_to() -> None:
    session, _ = make()
    batch = (
        wire.Parse("s", "delete from t").encode()
        + wire.Bind("p", "s").encode()
        + wire.Close("S", "s").encode()
        + wire.Parse("s", "select 1").encode()
        + wire.Execute("p").encode()
    )
    session.client_data(batch)
    (judge,) = session.take_commands()  # the portal still runs the DELETE
    assert isinstance(judge, Judge) and judge.verdict.rule == "review-writes"


def test_execute_of_a_portal_the_gateway_never_saw_is_refused() -> None:
    session, _ = make()
    session.client_data(wire.Execute("cursor_from_dynamic_sql").encode() + wire.Sync().encode())
    (judge,) = session.take_commands()
    assert judge.verdict.action.value == "deny"


def _masked_session(rules: list[dict[str, Any]]) -> tuple[PgSession, Recorder]:
    from storage.masking import MaskPolicy

    session, recorder = make()
    session.masker = MaskPolicy.from_config(rules, "test.toml", b"k" * 32).for_caller([], "db")
    return session, recorder


def test_copy_columns_are_asked_on_the_same_connection_and_kept_from_the_client() -> None:
    session, recorder = _masked_session([{"name": "pw", "column": "password"}])
    query = wire.Query("copy users to stdout").encode()
    session.client_data(query)
    sent = up(session)
    assert sent.endswith(query) and sent.startswith(b"P")  # the question, then the COPY
    answer = [
        wire.ParseComplete(),
        wire.BindComplete(),
        wire.RowDescription((wire.Column("attname"),)),
        wire.DataRow((b"id",)),
        wire.DataRow((b"password",)),
        wire.CommandComplete("SELECT 2"),
        wire.ReadyForQuery("I"),
        wire.CopyOutResponse(0, (0, 0)),
        wire.CopyData(b"1\tsecr"),
        wire.CopyData(b"et\n2\t\\N\n"),
        wire.CopyDone(),
        wire.CommandComplete("COPY 2"),
        wire.ReadyForQuery("I"),
    ]
    session.upstream_data(b"".join(m.encode() for m in answer))
    messages = down(session)
    assert [type(m).__name__ for m in messages] == [
        "CopyOutResponse",
        "CopyData",
        "CopyData",
        "CopyDone",
        "CommandComplete",
        "ReadyForQuery",
    ]
    assert [m.data for m in messages if isinstance(m, wire.CopyData)] == [
        b"1\t********\n",
        b"2\t\\N\n",
    ]
    columns, rows, sample, _ = recorder.of(EventType.SQL_RESULT)[0]
    assert (columns, rows, sample) == (["id", "password"], 2, [["1", "********"], ["2", None]])
    assert [fields[1] for fields in recorder.of(EventType.MASK)] == ["pw"]


def test_copy_whose_columns_cannot_be_told_ends_the_session() -> None:
    session, _ = _masked_session([{"name": "pw", "column": "password"}])
    session.client_data(wire.Query("copy users to stdout").encode())
    up(session)
    answer = [
        wire.ParseComplete(),
        wire.BindComplete(),
        wire.RowDescription((wire.Column("attname"),)),
        wire.CommandComplete("SELECT 0"),  # to_regclass found no such table just then
        wire.ReadyForQuery("I"),
        wire.CopyOutResponse(0, (0, 0)),
        wire.CopyData(b"1\tsecret\n"),
    ]
    session.upstream_data(b"".join(m.encode() for m in answer))
    messages = down(session)
    assert [type(m).__name__ for m in messages] == ["ErrorResponse"]
    assert session.closed and b"secret" not in bytes(session.to_client)


def test_binary_copy_passes_only_when_no_rule_can_apply() -> None:
    session, _ = _masked_session([{"name": "pw", "column": "password"}])
    query = wire.Query("copy users (id) to stdout (format binary)").encode()
    session.client_data(query)
    assert up(session) == query
    answer = b"".join(
        m.encode()
        for m in (
            wire.CopyOutResponse(1, (1,)),
            wire.CopyData(b"PGCOPY\n\xff\r\n\x00"),
            wire.CopyDone(),
            wire.CommandComplete("COPY 0"),
            wire.ReadyForQuery("I"),
        )
    )
    session.upstream_data(answer)
    assert bytes(session.to_client) == answer  # untouched
    session.to_client.clear()
    session.client_data(wire.Query("copy users (id, password) to stdout binary").encode())
    assert up(session) == b""
    (error, _ready) = down(session)
    assert isinstance(error, wire.ErrorResponse) and "binary" in error.message
