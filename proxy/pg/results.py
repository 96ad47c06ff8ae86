"""Results on their way to the client: what is recorded of each (columns, row count, the
first rows, timing), and masking: rows (`ResultMasking.row`), the values errors, notices and
notifications echo, and the rows of COPY TO STDOUT (`CopyMasking`). Rows are read with the
wire's decoder; a masked row is written back with the wire's encoder."""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from proxy.pg import classify as sqlclass
from proxy.pg.binary_values import readable
from proxy.pg.copy_out import BINARY, CopyJob, CopyOut, CopyRows
from proxy.pg.lineage import OutputMasks
from proxy.pg.statements import Portal, Prepared
from proxy.pg.wire import (
    Bind,
    CopyData,
    CopyResponse,
    DataRow,
    ErrorResponse,
    Field,
    NoticeResponse,
    NotificationResponse,
    ProtocolError,
)
from storage.masking import ColumnPlan, MaskAct, Masker, MaskRule

DEFAULT_SAMPLE_ROWS = 20
MAX_SAMPLE_VALUE = 1024  # bytes of one recorded value; longer values are cut
INSUFFICIENT_PRIVILEGE = "42501"
# The session's MASK recorder (channel, rule, position, length, token, column): False when
# the recording failed.
Record = Callable[[int, str, int, int, str, "str | None"], bool]


@dataclass(slots=True)
class Result:
    """One statement's result as it streams back."""

    statement: str
    started_ns: int
    columns: list[str] | None = None
    sample: list[list[Any]] = field(default_factory=list)
    rows: int = 0
    mask: ColumnPlan | None = None  # built from the columns at the first row, when masking
    # Where the columns will be known when a Describe's answer arrives after the Execute.
    described_by: list[Portal | Prepared] = field(default_factory=list)
    on_done: Callable[[], None] | None = None  # an effect that counts once it succeeded
    copy: CopyJob | None = None  # a COPY TO STDOUT whose rows are masked
    # Output columns whose values come from masked columns, whatever they are called.
    outputs: OutputMasks | None = None
    types: tuple[int, ...] | None = None  # the columns' type OIDs, when described
    formats: tuple[int, ...] = ()  # result format codes of the Bind (none: text)
    nulled: bool = False  # a masked binary value was sent as NULL (the notice was sent)


def sample_row(body: bytes) -> list[Any]:
    """A DataRow's values for the record, read with the wire's decoder, each cut to
    MAX_SAMPLE_VALUE bytes (only the first rows of a result are sampled)."""
    return [sample_value(value) for value in DataRow.decode(body).values]


def wire_value(masked: bytes | str | None, original: bytes | str | None) -> bytes | None:
    """A masked value as DataRow bytes. A binary value the masker changed becomes NULL."""
    if isinstance(masked, str):
        return masked.encode("utf-8")
    if masked is not None and masked != original:
        return None
    return masked


# Types whose binary format is their UTF-8 text: a masked value can be sent as text.
_TEXT_TYPES = frozenset({25, 1043, 1042, 19, 705, 18})
_JSONB = 3802
_JSON_TYPES = frozenset({114, _JSONB})


def typed_values(
    out: tuple[bytes | None, ...],
    texts: Sequence[bytes | str | None],
    masked: Sequence[bytes | str | None],
    result: Result,
) -> tuple[tuple[bytes | None, ...], bool]:
    """The row with masked values made readable for their column's type: a JSON value
    becomes a JSON string (`"********"`, so a driver still parses it), and a binary-format
    value of any other non-text type becomes NULL (a driver would misread `********` as an
    integer or a timestamp). Also whether a value became NULL."""
    types = result.types or ()
    formats = result.formats
    nulled = False
    row = list(out)
    for index, value in enumerate(row):
        if value is None or masked[index] == texts[index]:
            continue
        oid = types[index] if index < len(types) else 0
        code = formats[0] if len(formats) == 1 else _at(formats, index)
        if oid in _JSON_TYPES:
            quoted = json.dumps(value.decode("utf-8", "replace")).encode("utf-8")
            row[index] = b"\x01" + quoted if code == 1 and oid == _JSONB else quoted
        elif code == 1 and oid not in _TEXT_TYPES:
            row[index] = None
            nulled = True
    return tuple(row), nulled


def binary_text(result: Result, index: int, value: bytes | None) -> str | None:
    """A binary-format value of a type `readable` knows, as its text; None otherwise."""
    formats = result.formats
    if value is None or (formats[0] if len(formats) == 1 else _at(formats, index)) != 1:
        return None
    types = result.types or ()
    oid = types[index] if index < len(types) else 0
    return None if oid in _TEXT_TYPES else readable(oid, value)


def _at(codes: tuple[int, ...], index: int) -> int:
    return codes[index] if index < len(codes) else 0


def result_formats(bind_body: bytes) -> tuple[int, ...]:
    try:
        return Bind.decode(bind_body).result_formats
    except ProtocolError:
        return ()


def sample_text(value: str | None) -> str | None:
    return None if value is None else value[:MAX_SAMPLE_VALUE]


def sample_value(value: bytes | None) -> str | bytes | None:
    if value is None:
        return None
    cut = value[:MAX_SAMPLE_VALUE]
    try:
        return cut.decode("utf-8")
    except UnicodeDecodeError:
        return bytes(cut)


def bind_params(bind_body: bytes, codec: str = "utf-8") -> list[str | bytes | None]:
    """A Bind's parameters for the record: text ones as text, binary ones as bytes."""
    try:
        bind = Bind.decode(bind_body, codec)
    except ProtocolError:
        return []
    out: list[str | bytes | None] = []
    for index, value in enumerate(bind.params):
        if value is None:
            out.append(None)
        elif bind.param_format(index) == 0:
            out.append(value[:MAX_SAMPLE_VALUE].decode(codec, errors="replace"))
        else:
            out.append(bytes(value[:MAX_SAMPLE_VALUE]))
    return out


def row_mask(act: MaskAct, row: int) -> tuple[int, str, int, int, str, str | None]:
    """The fields of a MASK event for a result row: channel 0, the 1-based row as position,
    and the column (None when its name is not known, as for a COPY with value detectors
    only)."""
    return (0, act.rule, row, act.length, act.token, act.column or None)


def whole_rule(masker: Masker) -> MaskRule | None:
    """The first rule that masks a column's whole value (no detector or pattern), if any."""
    for rule in masker.rules:
        if rule.column is not None and rule.detector is None and rule.pattern is None:
            return rule
    return None


_TEXT_FIELDS = frozenset({Field.MESSAGE, Field.DETAIL, Field.HINT})
# Errors whose message, detail or context echo an input value or a row: data exceptions
# (22P02 `invalid input syntax for type integer: "..."`) and integrity violations (23505's
# `Key (x)=(...)`, 23502's `Failing row contains (...)`); `W` is the context field (COPY's
# line, a function's statement).
_ECHOING_CLASSES = frozenset({"22", "23"})
_ECHO_FIELDS = frozenset({Field.MESSAGE, Field.DETAIL, ord("W")})
_QUOTED = re.compile(r'"([^"]*)"')


class ResultMasking:
    """The masking rules of one session applied to what comes back: rows, and the values
    errors, notices and notifications echo. Output goes to `out` (the client's bytes), MASK
    events to `record`."""

    def __init__(self, masker: Masker, out: bytearray, record: Record, sample_rows: int) -> None:
        self.masker = masker
        self.out = out
        self.record = record
        self.sample_rows = sample_rows

    def row(self, result: Result, buf: bytearray, start: int, end: int) -> bool:
        """Mask a row (the DataRow at buf[start:end]) before the client sees it; True when a
        rewritten row was sent instead. Values are read as text: a masked value that is not
        UTF-8 (a binary-format column) becomes NULL rather than bytes a driver would
        misread."""
        plan = self._plan(result, buf, start)
        if not plan.active:
            return False
        values = DataRow.decode(bytes(buf[start + 5 : end])).values
        texts = _texts(result, values)
        masked, acts = plan.mask_row(texts)
        if not acts:
            return False
        out = tuple(
            raw if new == old else wire_value(new, old)
            for new, old, raw in zip(masked, texts, values, strict=True)
        )
        out, nulled = typed_values(out, texts, masked, result)
        if nulled and not result.nulled:
            result.nulled = True
            self.out += NoticeResponse.make(
                "01000",
                "hoop: masked values of binary-format columns are sent as NULL",
                severity="NOTICE",
            ).encode()
        self.out += DataRow(out).encode()
        if len(result.sample) < self.sample_rows:
            result.sample.append([sample_value(v) for v in out])
            for act in acts:
                if not self.record(*row_mask(act, result.rows)):
                    return True
        return True

    def _plan(self, result: Result, buf: bytearray, start: int) -> ColumnPlan:
        """The result's column plan, made at its first row."""
        if result.mask is None:
            columns = result.columns or next(
                (item.columns for item in result.described_by if item.columns), None
            )
            if columns is None:  # never described: value detectors still run on every column
                columns = [""] * int.from_bytes(buf[start + 5 : start + 7], "big", signed=True)
            if result.types is None:
                result.types = next(
                    (item.types for item in result.described_by if item.types is not None), None
                )
            forced = result.outputs.rules(columns) if result.outputs is not None else None
            result.mask = self.masker.plan(columns, forced=forced)
        return result.mask

    def report(self, report: ErrorResponse) -> ErrorResponse | None:
        """Errors and notices echo values (`DETAIL: Key (email)=(...)`): the report with its
        text fields masked, or None when nothing in it needed masking. Under a whole-value
        column rule, the values a data or integrity error echoes (`invalid input syntax for
        type integer: "..."` of `password::int`, `Failing row contains (...)`) are masked
        whole: the gateway cannot tell which column they came from."""
        whole = whole_rule(self.masker)
        if not self.masker.masks_text and whole is None:
            return None
        echoes = whole is not None and report.sqlstate[:2] in _ECHOING_CLASSES
        fields, masked = [], False
        for code, value in report.fields:
            if echoes and whole is not None and code in _ECHO_FIELDS:
                new = self._echo(whole, code, value)
                masked = masked or new != value
                value = new
            if code in _TEXT_FIELDS:
                new, acts = self.masker.mask_text(value)
                self._record_acts(acts)
                masked = masked or new != value
                value = new
            fields.append((code, value))
        return type(report)(tuple(fields)) if masked else None

    def _echo(self, rule: MaskRule, code: int, value: str) -> str:
        """An echoed value masked whole: the quoted parts of a message, all of a detail or
        context (they quote rows and input lines)."""
        masker = self.masker

        def whole(text: str) -> str:
            out, act = masker._mask_whole(rule, "error", text)
            if act is not None:
                self._record_acts([act])
            return str(out)

        if code == Field.MESSAGE:
            return _QUOTED.sub(lambda match: '"' + whole(match.group(1)) + '"', value)
        return whole(value) if value else value

    def notification(self, body: bytes) -> bool:
        """A NOTIFY payload may carry any value (`pg_notify('c', card)` from a table): value
        detectors mask it, and under a whole-value column rule it is masked whole, since the
        gateway cannot tell where it came from. True when a rewritten one was sent."""
        note = NotificationResponse.decode(body)
        payload, acts = self.masker.mask_text(note.payload)
        rule = whole_rule(self.masker)
        if rule is not None and payload:
            shown, act = self.masker._mask_whole(rule, "payload", note.payload)
            payload, acts = str(shown), [act] if act is not None else []
        if payload == note.payload:
            return False
        self._record_acts(acts)
        self.out += NotificationResponse(note.pid, note.channel, payload).encode()
        return True

    def notice(self, body: bytes, codec: str) -> bool:
        """A notice with its echoed values masked; True when a rewritten one was sent."""
        masked = self.report(NoticeResponse.decode(body, codec))
        if masked is None:
            return False
        self.out += masked.encode()
        return True

    def _record_acts(self, acts: Sequence[MaskAct]) -> None:
        for act in acts:
            self.record(0, act.rule, act.position, act.length, act.token, None)


def _texts(result: Result, values: Sequence[bytes | None]) -> list[bytes | str | None]:
    texts: list[bytes | str | None] = []
    for index, value in enumerate(values):
        # a binary integer, numeric or array is read as the text PostgreSQL would send
        text = binary_text(result, index, value)
        if text is not None:
            texts.append(text)
            continue
        try:
            texts.append(None if value is None else value.decode("utf-8"))
        except UnicodeDecodeError:
            texts.append(value)
    return texts


# ---------------------------------------------------------------------------------------------
# COPY TO STDOUT, masked


class CopyMasking:
    """Masks the rows of COPY TO STDOUT (text and CSV): decides at the statement whether a
    COPY can be masked (else it is refused), and at its CopyOutResponse which columns it
    writes; then masks each row of the CopyData stream. `fatal` ends the session (the
    gateway cannot tell the columns: it fails closed)."""

    def __init__(
        self,
        masker: Masker,
        out: bytearray,
        record: Record,
        sample_rows: int,
        fatal: Callable[[str, str], None],
    ) -> None:
        self.masker = masker
        self.out = out
        self.record = record
        self.sample_rows = sample_rows
        self.fatal = fatal
        self.rows: CopyRows | None = None  # the COPY whose CopyData is being masked
        self.result: Result | None = None

    def refusal(self, spec: CopyOut, *, extended: bool, alone: bool = True) -> str | None:
        """Why this COPY cannot be masked (and so is refused), or None."""
        masker = self.masker
        if spec.columns is not None:
            may_mask = masker.plan(list(spec.columns)).active
        else:
            may_mask = bool(masker.text_finders) or masker.uses_columns
        if not may_mask:
            return None
        if spec.format == BINARY:
            return (
                "hoop: masking rules apply to this COPY and the binary format cannot be "
                "masked: use the text or CSV format"
            )
        if not spec.utf8:
            return "hoop: masking rules apply to this COPY: its ENCODING must be UTF8"
        if spec.columns is None and masker.uses_columns and (extended or not alone):
            return (
                "hoop: masking rules name columns, so a COPY TO STDOUT needs its column list "
                "here (COPY t (a, b) TO STDOUT), or must be sent on its own as a simple query"
            )
        return None

    def jobs(
        self,
        found: sqlclass.Classified,
        copies: Sequence[CopyOut | None],
        results: deque[Result],
    ) -> str | None:
        """Attach a CopyJob to each COPY TO STDOUT of a Query; a refusal when one cannot be
        masked (then nothing of the string is sent)."""
        alone = len(found.statements) == 1
        for statement, spec, result in zip(found.statements, copies, results, strict=False):
            if sqlclass.COPY_OUT not in statement.classes or spec is None:
                continue  # COPY TO a file or a program: no rows come back
            refusal = self.refusal(spec, extended=False, alone=alone)
            if refusal:
                return refusal
            columns = list(spec.columns) if spec.columns else None
            if columns is None and not self.masker.uses_columns:
                columns = []  # value detectors only: the names do not matter
            result.copy = CopyJob(spec, columns)
        return None

    def response(self, result: Result | None, body: bytes) -> bool:
        """A CopyOutResponse: start masking its rows when the plan masks anything. False
        when the session ended (the columns could not be told, or cannot be masked)."""
        job = result.copy if result is not None else None
        count = len(CopyResponse.decode(body).column_formats)
        columns = job.columns if job is not None else None
        if columns == [] or (columns is None and not self.masker.uses_columns):
            columns = [""] * count
        if columns is None or len(columns) != count:
            self.fatal(
                INSUFFICIENT_PRIVILEGE,
                "hoop: the gateway could not tell the columns of this COPY, so it ended the "
                "session rather than pass unmasked data",
            )
            return False
        forced = None
        if job is not None and self.masker.uses_columns and job.spec.lineage is not None:
            # `COPY t` reads what `select * from t` does (`COPY pg_statistic`: sampled values)
            outputs = OutputMasks.build(job.spec.lineage, self.masker)
            forced = outputs.rules(columns) if outputs is not None else None
        plan = self.masker.plan(columns, forced=forced)
        if not plan.active:
            return True
        if job is None or body[0] != 0 or job.spec.format == BINARY or not job.spec.utf8:
            self.fatal(
                INSUFFICIENT_PRIVILEGE,
                "hoop: the gateway cannot mask this COPY, so it ended the session rather "
                "than pass unmasked data",
            )
            return False
        assert result is not None
        result.columns = [name for name in columns if name] or None
        self.rows = CopyRows(job.spec, plan)
        self.result = result
        return True

    def data(self, body: bytes) -> bool:
        """CopyData: True when it passes unchanged (no COPY is being masked)."""
        rows = self.rows
        if rows is None:
            return True
        for row in rows.feed(body):
            if not self._row(rows, row):
                break
        return False

    def done(self) -> None:
        rows, self.rows = self.rows, None
        if rows is not None:
            rest = rows.finish()
            if rest:
                self._row(rows, rest)

    def failed(self) -> None:
        self.rows = None  # a COPY that fails midway sends nothing more

    def _row(self, rows: CopyRows, row: bytes) -> bool:
        out, values, acts = rows.mask(row)
        self.out += CopyData(out).encode()
        result = self.result
        if values is None or result is None:
            return True
        result.rows += 1
        if len(result.sample) < self.sample_rows:
            result.sample.append([sample_text(value) for value in values])
            for act in acts:
                if not self.record(*row_mask(act, result.rows)):
                    return False
        return True
