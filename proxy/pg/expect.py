"""What the server owes the client: one `Expect` per response-producing client message, in
order, so that the gateway's own replies go out in their place in the response stream and
each result is recorded against the statement that produced it."""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from proxy.pg.results import Result


class State(enum.Enum):
    """How a session reads the client's messages now (one reader per state)."""

    READY = "ready"  # each message is handled as it comes
    HELD = "held"  # a statement waits for its verdict to be carried out (a Judge)
    DISCARDING = "discarding"  # after a refusal in the extended protocol: until Sync
    SETTLING = "settling"  # until the server says which client_encoding follows
    CLOSED = "closed"


class Kind(enum.Enum):
    PARSE = "parse"
    BIND = "bind"
    DESCRIBE = "describe"
    EXECUTE = "execute"
    CLOSE = "close"
    SYNC = "sync"
    QUERY = "query"
    LOCAL = "local"  # bytes the gateway itself answers with, sent when their turn comes
    LOCAL_READY = "local_ready"  # a ReadyForQuery with the then current status
    ABORT = "abort"  # the gateway's own failing Describe: makes the upstream drop a batch
    SIDE = "side"  # the gateway's own question before a COPY: which columns it will write


@dataclass(slots=True)
class Expect:
    kind: Kind
    swallow: bool = False  # the gateway sent it; its answer is not the client's
    data: bytes = b""
    name: str = ""  # statement or portal of a Describe/Parse
    describe_kind: str = ""
    results: deque[Result] | None = None  # QUERY: one per statement; EXECUTE: one
    current: Result | None = None
    refusal: Expect | None = None  # ABORT: the refusal to drop if the batch failed before
    on_done: Callable[[], None] | None = None  # CLOSE: forget the object once it is closed


LOCAL_KINDS = (Kind.LOCAL, Kind.LOCAL_READY)
ANSWERED_BY_READY = (Kind.QUERY, Kind.SYNC)
RESULT_KINDS = (Kind.QUERY, Kind.EXECUTE)
