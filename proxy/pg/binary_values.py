"""Binary-format result values as the text PostgreSQL would send for them, for the value
detectors. Pure.

A driver may ask for results in binary (psycopg's binary cursors, asyncpg for most types):
`select card::int8` then arrives as eight bytes, which no detector reads, while the same query
in text shows `4111111111111111` and is masked. `readable(oid, value)` gives the text form of
the types a detector can find something in: integers, numeric, and arrays of any type it
reads (also `anyarray`, as `pg_stats` returns), with their elements as PostgreSQL would write
them; records (`row(card::int8)`) and ranges of those. Text types need nothing (their binary
form is their text). A float that holds a whole number is read as that integer (PostgreSQL's
text would be `4.111111111111111e+15`, but the driver shows the client every digit). A type
of the database's own (a composite, an enum) is read as a record when it parses as one, else
as UTF-8 text. Other types give None; a column rule still masks them whole (and the session
sends NULL for a masked binary value).
"""

from __future__ import annotations

import struct
from decimal import Context, Decimal

_INTEGERS = {21: "!h", 23: "!i", 20: "!q", 26: "!I", 28: "!I", 29: "!I", 24: "!I", 2205: "!I"}
_TEXT = frozenset({25, 1043, 1042, 19, 705, 18, 114})
_NUMERIC = 1700
_ANYARRAY = 2277
# array type -> element type, for the element types above (and text ones)
_ARRAYS = {
    1005: 21,
    1007: 23,
    1016: 20,
    1028: 26,
    1231: 1700,
    1009: 25,
    1015: 1043,
    1014: 1042,
    1003: 19,
    199: 114,
    1002: 18,
    3807: 3802,
    1000: 16,
}
_RECORD = 2249
_RANGES = {3904: 23, 3926: 20, 3906: 1700}  # int4range, int8range, numrange
_FLOATS = {700: "!f", 701: "!d"}
_FIRST_USER_OID = 16384
_HEADER = struct.Struct("!iiI")
_DIMENSION = struct.Struct("!ii")
_LENGTH = struct.Struct("!i")
MAX_DEPTH = 8


def readable(oid: int, value: bytes) -> str | None:
    """The text form of a binary value of type `oid`, or None when it is not a type read here
    (or does not parse as one)."""
    try:
        return _text(oid, value, 0)
    except (struct.error, ValueError, ArithmeticError, UnicodeDecodeError, IndexError):
        return None


def _text(oid: int, value: bytes, depth: int) -> str | None:
    if oid in _INTEGERS:
        (number,) = struct.unpack(_INTEGERS[oid], value)
        return str(number)
    if oid == _NUMERIC:
        return _numeric(value)
    if oid in _TEXT:
        return value.decode("utf-8")
    if oid == 3802:  # jsonb: a version byte, then the text
        return value[1:].decode("utf-8") if value[:1] == b"\x01" else None
    if oid == 16:
        return "t" if value == b"\x01" else "f"
    if oid in _FLOATS:
        (number,) = struct.unpack(_FLOATS[oid], value)
        return str(int(number)) if number.is_integer() and abs(number) < 1e21 else repr(number)
    if depth >= MAX_DEPTH:
        return None
    if oid in _ARRAYS or oid == _ANYARRAY:
        return _array(value, depth)
    if oid == _RECORD:
        return _record(value, depth)
    if oid in _RANGES:
        return _range(value, _RANGES[oid], depth)
    if oid >= _FIRST_USER_OID:  # a composite, an array of one, an enum's label
        for read in (_record, _array):
            try:
                return read(value, depth)
            except (struct.error, ValueError, ArithmeticError, UnicodeDecodeError, IndexError):
                continue
        return value.decode("utf-8")
    return None


def _record(value: bytes, depth: int) -> str | None:
    """A record (or composite) as `(a,b,...)`; ValueError when it is not one."""
    (count,) = _LENGTH.unpack_from(value)
    if not 0 <= count <= 1600:
        raise ValueError("not a record")
    offset = _LENGTH.size
    items: list[str] = []
    for _ in range(count):
        oid, length = _DIMENSION.unpack_from(value, offset)
        offset += _DIMENSION.size
        if length < 0:
            items.append("")
            continue
        if offset + length > len(value):
            raise ValueError("not a record")
        text = _text(oid, value[offset : offset + length], depth + 1)
        if text is None:
            return None
        items.append(text)
        offset += length
    if offset != len(value):
        raise ValueError("not a record")
    return "(" + ",".join(items) + ")"


def _range(value: bytes, element: int, depth: int) -> str | None:
    """A range as `[lower,upper)`, its bounds read by the element type."""
    flags = value[0]
    if flags & 0x01:
        return "empty"
    offset, bounds = 1, []
    for present in (not flags & 0x08, not flags & 0x10):  # lower, upper infinite
        if not present:
            bounds.append("")
            continue
        (length,) = _LENGTH.unpack_from(value, offset)
        offset += _LENGTH.size
        text = _text(element, value[offset : offset + length], depth + 1)
        if text is None:
            return None
        bounds.append(text)
        offset += length
    return ("[" if flags & 0x02 else "(") + ",".join(bounds) + ("]" if flags & 0x04 else ")")


def _numeric(value: bytes) -> str:
    count, weight, sign, scale = struct.unpack_from("!hhHh", value)
    digits = struct.unpack_from(f"!{count}h", value, 8)
    if sign == 0xC000:
        return "NaN"
    if sign in (0xD000, 0xF000):
        return "Infinity" if sign == 0xD000 else "-Infinity"
    whole = int("".join(f"{digit:04d}" for digit in digits) or "0")
    context = Context(prec=max(4 * (count + abs(weight)) + scale + 8, 28))
    number = Decimal(whole).scaleb(4 * (weight + 1 - count), context=context)
    text = format(number.quantize(Decimal(1).scaleb(-scale), context=context), "f")
    return "-" + text if sign == 0x4000 else text


def _array(value: bytes, depth: int) -> str | None:
    """An array as `{a,b,...}` (nested braces for more dimensions), its elements read by
    their own type; None when an element's type is not read here."""
    dimensions, nulls, element = _HEADER.unpack_from(value)
    if not 0 <= dimensions <= 6 or nulls not in (0, 1):
        raise ValueError("not an array")
    offset = _HEADER.size
    sizes = []
    for _ in range(dimensions):
        size, _ = _DIMENSION.unpack_from(value, offset)
        sizes.append(size)
        offset += _DIMENSION.size
    items: list[str] = []
    total = 1
    for size in sizes:
        total *= size
    if dimensions == 0:
        total = 0
    for _ in range(total):
        (length,) = _LENGTH.unpack_from(value, offset)
        offset += _LENGTH.size
        if length < 0:
            items.append("NULL")
            continue
        text = _text(element, value[offset : offset + length], depth + 1)
        if text is None:
            return None
        items.append(text)
        offset += length
    if offset != len(value):
        raise ValueError("not an array")
    return _nest(items, sizes)


def _nest(items: list[str], sizes: list[int]) -> str:
    if len(sizes) <= 1:
        return "{" + ",".join(items) + "}"
    step = len(items) // sizes[0] if sizes[0] else 0
    parts = [_nest(items[i * step : (i + 1) * step], sizes[1:]) for i in range(sizes[0])]
    return "{" + ",".join(parts) + "}"
