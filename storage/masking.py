"""One masking engine for SQL values and terminal text. Pure: no I/O, no clock.

The `[[masks]]` table of the gateway config becomes `MaskRule` objects here, validated whole;
errors name the rule and the key (`masks #2 (cards).pattern: ...`). A rule either names
columns (`column`, a glob, optionally limited by `tables`), in which case the whole value of a
matching column is replaced, or finds secrets in any text with a built-in `detector` or a custom
`pattern`. Both together limit the detector to the values of those columns. `groups` and
`except_groups` scope a rule to callers; `targets` to targets. `MaskPolicy.for_caller` picks the
rules for one caller and target and returns a `Masker`, the object the data path uses:

- `mask_text(text)` for terminal text (and `storage.mask_stream.MaskStream` for a byte stream cut
  into packets),
- `mask_value(column, table, value)` / `plan(columns).mask_row(values)` for SQL results.

Every replacement yields a `MaskAct` (rule, position, length, token): never the raw value. The
token is a stable keyed hash (HMAC-SHA256 under the gateway secret, `tok_` + 12 hex digits), so
an auditor can tell that two sessions showed the same card without seeing it.

Styles (docs/masking.md has the reference):
- "full" in text: every character of the secret becomes `*`, line breaks kept, so the screen
  layout (columns, cursor moves) is unchanged; a whole column value becomes `********` (eight,
  whatever its length, so the length is not disclosed);
- "last4": letters and digits but the last four become `*`, separators kept (`**** **** ****
  1111`); a value with fewer than 8 letters and digits is masked fully;
- "token": the value is replaced by its token (the length changes).
Two built-ins mask only part of what they find: `password_assignment` only the value after
`password=`, and `pem_private_key` only the body between its BEGIN and END lines (always with
`*`, whatever the style, so a stream can mask a long block before its END arrives).

Escape sequences are never matched into or across: a hit inside a CSI/OSC/DCS sequence is
skipped, and a hit that runs into one is cut before it.
"""

from __future__ import annotations

import bisect
import enum
import functools
import hashlib
import hmac
import itertools
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, TypedDict

from storage.config_file import ConfigError, entry_key, parse_named_entries

try:  # the compiled multi-pattern prefilter (Hyperscan); without it, per-detector passes
    import hyperscan
except ImportError:  # pragma: no cover - a platform without a wheel
    hyperscan = None  # type: ignore[assignment]

TOKEN_PREFIX = "tok_"
TOKEN_HEX = 12
FULL_VALUE = "********"
LAST4_MIN = 8  # fewer letters and digits than this: last4 masks everything
LOOKBEHIND = 4096  # the most text a stream holds back (characters), see mask_stream
TOKEN_CACHE = 1024  # tokens a masker keeps, per value (see Masker.token)
PLAN_CACHE = 256  # column plans a masker keeps, per column list (see Masker.plan)
PREFILTER_MIN = 256  # texts shorter than this (most SQL values) skip the compiled prefilter
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
KNOWN_KEYS = frozenset(
    {"name", "column", "tables", "targets", "detector", "pattern", "style", "groups"}
    | {"except_groups"}
)

# A complete escape sequence (CSI, OSC ended by BEL or ST, DCS/SOS/PM/APC, other escapes),
# and one cut short at the end of the text.
ESCAPE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"
    r"|\x1b[P^_X][^\x1b]*\x1b\\"
    r"|\x1b[ -/]*[0-~]"
)
PARTIAL_ESCAPE = re.compile(
    r"\x1b(?:\[[0-?]*[ -/]*|\][^\x07\x1b]*\x1b?|[P^_X][^\x1b]*\x1b?|[ -/]*)\Z"
)


class Style(enum.Enum):
    FULL = "full"
    LAST4 = "last4"
    TOKEN = "token"


@dataclass(frozen=True, slots=True)
class MaskAct:
    """One replacement, for the recording (a MASK event) and the review screen. `position`
    and `length` are in characters of the output text for `mask_text`, in bytes of the output
    stream (position) and of the original secret (length) for `MaskStream`, and 0 and the
    value's length for a whole SQL value. Never holds the raw value."""

    rule: str
    position: int
    length: int
    token: str
    column: str | None = None


def make_token(secret: bytes, value: str) -> str:
    """The stable keyed token of a (normalized) value."""
    digest = hmac.new(secret, value.encode("utf-8", "surrogateescape"), hashlib.sha256)
    return TOKEN_PREFIX + digest.hexdigest()[:TOKEN_HEX]


# -- detectors ------------------------------------------------------------------------------


_DOUBLED = str.maketrans("0123456789", "0246813579")  # 2d, minus 9 when over 9


def luhn_ok(digits: str) -> bool:
    """The Luhn check of a string of ASCII digits."""
    kept = digits[-1::-2]
    doubled = digits[-2::-2].translate(_DOUBLED)
    return (sum(map(int, kept)) + sum(map(int, doubled))) % 10 == 0


def iban_ok(compact: str) -> bool:
    """ISO 13616 check: move the first four characters to the end, letters to numbers, mod 97."""
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    try:
        number = int("".join(str(int(char, 36)) for char in moved))
    except ValueError:
        return False
    return number % 97 == 1


_SEPARATORS = re.compile(r"[ -]")
# Issuer prefixes in use: Visa, Mastercard, Amex, Discover and UnionPay, JCB, Diners.
_CARD_PREFIXES = (
    *("4", "51", "52", "53", "54", "55", "22", "23", "24", "25", "26", "27"),
    *("34", "37", "6", "35", "36", "38", "30"),
)


def _accept_card(candidate: str) -> int:
    """Length of the longest valid card number at the start of `candidate` (dropping trailing
    groups), 0 if none."""
    while True:
        digits = _SEPARATORS.sub("", candidate)
        if 13 <= len(digits) <= 19 and digits.startswith(_CARD_PREFIXES) and luhn_ok(digits):
            return len(candidate)
        cut = max(candidate.rfind(" "), candidate.rfind("-"))
        if cut <= 0 or len(digits) < 13:
            return 0
        candidate = candidate[:cut]


def _accept_iban(candidate: str) -> int:
    while True:
        if iban_ok(candidate.replace(" ", "")):
            return len(candidate)
        cut = candidate.rfind(" ")
        if cut <= 0:
            return 0
        candidate = candidate[:cut]


def _digits(value: str) -> str:
    return "".join(char for char in value if char.isdigit())


@dataclass(frozen=True, slots=True)
class Detector:
    """A built-in detector: a pattern of candidates, an acceptance check (the accepted length
    of a candidate, 0 to reject), the named groups holding the part to mask (the whole match
    when empty), `tail`: a pattern anchored at the end of the text that matches every
    unfinished beginning of a candidate (a stream holds it back), searched in the last
    `tail_window` characters, and how a value is normalized before it is tokenized.

    `tail_classes` (the characters a tail is made of, those it can begin with) gives a faster
    `tail_start` built from `tail` and `tail_window` themselves (see `_class_tail`)."""

    name: str
    pattern: re.Pattern[str]
    tail: re.Pattern[str] | None
    tail_window: int
    accept: Callable[[str], int] | None = None
    value_groups: tuple[str, ...] = ()
    normalize: Callable[[str], str] = str
    description: str = ""
    possible: Callable[[Scan], bool] | None = None
    search: Search | None = None
    tail_start: Callable[[str, int], int] | None = None
    tail_classes: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        if self.tail_classes is not None and self.tail is not None:
            chars, firsts = self.tail_classes
            tail_start = _class_tail(self.tail, chars, self.tail_window, firsts)
            object.__setattr__(self, "tail_start", tail_start)


_EMAIL_LOCAL = r"[A-Za-z0-9._%+-]"
_JWT_PART = r"[A-Za-z0-9_-]"


class Scan:
    """Facts about one text computed once per `Masker.find`, for cheap prefilters that say
    when a detector cannot match anywhere (C-speed passes instead of a regex per position)."""

    __slots__ = ("_folds", "_lower", "_sig", "_starts", "_triggers", "ascii", "prefilter", "text")

    def __init__(self, text: str, prefilter: Prefilter | None = None) -> None:
        self.text = text
        self.ascii = text.isascii()
        self.prefilter = prefilter
        self._sig: bytes | None = None
        self._lower: str | None = None
        self._folds: bool | None = None
        self._triggers: dict[tuple[bytes, ...], list[int]] = {}
        self._starts: dict[str, list[int]] | None = None

    def starts(self, kind: str) -> list[int] | None:
        """Where a match of the detector `kind` may begin, sorted: every match begins at one
        of these. One pass of the compiled prefilter finds them for all detectors at once.
        None without a prefilter (or one that does not cover `kind`): the detector then
        makes its own C-speed passes."""
        prefilter = self.prefilter
        if prefilter is None or kind not in prefilter.kinds:
            return None
        starts = self._starts
        if starts is None:
            starts = self._starts = prefilter.run(self.text)
        return starts.get(kind, _NO_STARTS)

    def joined(self) -> bool:
        """Whether an invisible run sits inside something a secret is made of (`_joined`)."""
        return _joined(self.text)

    @property
    def folds(self) -> bool:
        """True when the text holds a non-ASCII character that case-insensitive matching
        takes for an ASCII letter (`ſ` for s, the Kelvin sign for k, dotted and dotless i):
        keyword passes over ASCII would miss what the `(?i)` pattern finds."""
        if self._folds is None:
            self._folds = not self.ascii and _FOLDS.search(self.text) is not None
        return self._folds

    def triggers(self, needles: tuple[bytes, ...]) -> list[int]:
        """Every position (overlapping ones too) where one of `needles` occurs in `sig`."""
        found = self._triggers.get(needles)
        if found is None:
            sig = self.sig
            found = []
            for needle in needles:
                index = sig.find(needle)
                while index >= 0:
                    found.append(index)
                    index = sig.find(needle, index + 1)
            found.sort()
            self._triggers[needles] = found
        return found

    @property
    def sig(self) -> bytes:
        """The text's bytes with digits as `0`, capitals as `A`, space and dash as `s`."""
        if self._sig is None:
            self._sig = self.text.encode("utf-8", "surrogateescape").translate(_SIG_TABLE)
        return self._sig

    @property
    def lower(self) -> str | None:
        """The text in lower case, or None when lowering would move characters."""
        if self._lower is None:
            lower = self.text.lower()
            self._lower = lower if len(lower) == len(self.text) else ""
        return self._lower or None


def _sig_table() -> bytes:
    table = bytearray(b"x" * 256)
    for code in b"0123456789":
        table[code] = ord("0")
    for code in b"ABCDEFGHIJKLMNOPQRSTUVWXYZ":
        table[code] = ord("A")
    table[ord(" ")] = table[ord("-")] = ord("s")
    return bytes.maketrans(bytes(range(256)), bytes(table))


_SIG_TABLE = _sig_table()
PEM = "pem_private_key"
_NO_STARTS: list[int] = []
# The non-ASCII characters that `re`'s IGNORECASE matches to ASCII letters (a test checks
# this against every code point).
_FOLDS = re.compile("[\u0130\u0131\u017f\u212a]")
Search = Callable[[re.Pattern[str], "Scan", int, int], "re.Match[str] | None"]
_LOCAL_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._%+-"
_DOMAIN_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-"
_KEY_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-"
_JWT_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
_KEY_LITERALS = ("pass", "pwd", "secret", "token", "key")
_DIGITS = "0123456789"
_AWS_PREFIX = re.compile("A(?:KIA|SIA|BIA|CCA|3T)")
_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_CARD_TRIGGERS = (b"0000000000000", b"0000s0000s0000s0", b"0000s000000s0000")


def _run_start(text: str, end: int, chars: str, limit: int, floor: int = 0) -> int:
    """Where the run of `chars` ending at `end` starts, looking back at most `limit + 1`."""
    lo = max(floor, end - limit - 1)
    return lo + len(text[lo:end].rstrip(chars))


def _email_search(
    pattern: re.Pattern[str], scan: Scan, pos: int, endpos: int
) -> re.Match[str] | None:
    text = scan.text
    at = text.find("@", pos, endpos)
    while at >= 0:
        start = _run_start(text, at, _LOCAL_CHARS, 64)
        if start < at and start >= pos:
            found = pattern.match(text, start, endpos)
            if found is not None:
                return found
        at = text.find("@", at + 1, endpos)
    return None


def _email_tail(text: str, pos: int) -> int:
    size = len(text)
    cut = size
    domain = _run_start(text, size, _DOMAIN_CHARS, 600, pos)
    if domain > pos and text[domain - 1] == "@":
        start = _run_start(text, domain - 1, _LOCAL_CHARS, 64, pos)
        if start < domain - 1 and (start == 0 or text[start - 1] not in _LOCAL_CHARS):
            cut = start
    start = _run_start(text, size, _LOCAL_CHARS, 64, pos)
    if start < size and (start == 0 or text[start - 1] not in _LOCAL_CHARS):
        cut = min(cut, start)
    return cut


def _password_search(
    pattern: re.Pattern[str], scan: Scan, pos: int, endpos: int
) -> re.Match[str] | None:
    text = scan.text
    keywords = None if scan.folds else _keyword_places(scan, pos, endpos)
    if keywords is None:  # `paſſword`: only the pattern itself knows every case-insensitive form
        return pattern.search(text, pos, endpos)
    tried = -1
    for keyword in keywords:
        start = _run_start(text, keyword, _KEY_CHARS, 32, pos)
        if start != tried and (start == 0 or text[start - 1] not in _KEY_CHARS):
            tried = start
            found = pattern.match(text, start, endpos)
            if found is not None:
                return found
    return None


def _keyword_places(scan: Scan, pos: int, endpos: int) -> Iterator[int] | None:
    """Where a password keyword (any ASCII case) starts in text[pos:endpos], in order: from
    the prefilter's pass, or by finding each literal in the lowered text; None when neither
    can say (lowering would move characters)."""
    keywords = scan.starts("password_assignment")
    if keywords is not None:
        first = bisect.bisect_left(keywords, pos)
        return itertools.takewhile(lambda keyword: keyword < endpos, keywords[first:])
    lower = scan.lower
    if lower is None:
        return None
    return _literal_places(lower, pos, endpos)


def _literal_places(lower: str, pos: int, endpos: int) -> Iterator[int]:
    # the next place of each literal (-1: none left); each literal is searched for again only
    # once the scan has passed it, so text full of `key` costs one pass per literal, not one
    # per candidate
    nexts = [lower.find(w, pos, endpos) for w in _KEY_LITERALS]
    while True:
        keyword = min((i for i in nexts if i >= 0), default=-1)
        if keyword < 0:
            return
        yield keyword
        pos = keyword + 1
        nexts = [
            i if i < 0 or i >= pos else lower.find(w, pos, endpos)
            for i, w in zip(nexts, _KEY_LITERALS, strict=True)
        ]


_PW_VALUE_TAIL = re.compile(
    r"[=:][ \t]{0,8}(?:\"[^\"\r\n\x1b]{0,256}|'[^'\r\n\x1b]{0,256}|[^\s\"',;&\x1b]{0,256})\Z"
)
_HAS_KEYWORD = re.compile(
    r"(?i)password|passwd|passphrase|pwd|secret|token|api[_-]?key|access[_-]?key"
)


def _password_tail(text: str, pos: int) -> int:
    size = len(text)
    lo = max(pos, size - 400)
    # `key = "partial value`: the key must hold a keyword
    sep = size
    for _ in range(8):
        sep = max(text.rfind("=", lo, sep), text.rfind(":", lo, sep))
        if sep < 0:
            break
        if _PW_VALUE_TAIL.match(text, sep):
            key_end = len(text[lo:sep].rstrip(" \t")) + lo
            if key_end > lo and text[key_end - 1] in "\"'":
                key_end -= 1
            start = _run_start(text, key_end, _KEY_CHARS, 80, pos)
            if start < key_end and _HAS_KEYWORD.search(text, start, key_end):
                return start
    # `passw` (still being written) or `password "` (a key, then maybe a quote and blanks)
    end = len(text[lo:].rstrip(" \t")) + lo
    closed = end < size
    if end > lo and text[end - 1] in "\"'":
        end -= 1
        closed = True
    start = _run_start(text, end, _KEY_CHARS, 80, pos)
    boundary = start < end and (start == 0 or text[start - 1] not in _KEY_CHARS)
    if boundary and (not closed or _HAS_KEYWORD.search(text, start, end)):
        return start
    return size


_JWT_TAIL = re.compile(
    rf"eyJ{_JWT_PART}*(?:\.(?:e(?:y(?:J{_JWT_PART}*(?:\.{_JWT_PART}*)?)?)?)?)?\Z"
)


def _jwt_tail(text: str, pos: int) -> int:
    size = len(text)
    run = _run_start(text, size, _JWT_CHARS + ".", LOOKBEHIND, pos)
    index = text.find("eyJ", run)
    while index >= 0:
        if (index == 0 or text[index - 1] not in _JWT_CHARS) and _JWT_TAIL.match(text, index):
            return index
        index = text.find("eyJ", index + 1)
    for short in ("ey", "e"):
        start = size - len(short)
        if (
            start >= pos
            and text.endswith(short)
            and (start == 0 or text[start - 1] not in _JWT_CHARS)
        ):
            return start
    return size


def _jwt_search(
    pattern: re.Pattern[str], scan: Scan, pos: int, endpos: int
) -> re.Match[str] | None:
    """Every JWT starts with `eyJ`: try the pattern only there (a regex search would test its
    lookbehind at every position, at about a tenth of the speed of `str.find`)."""
    text = scan.text
    starts = scan.starts("jwt")
    if starts is not None:
        return _match_at(pattern, text, starts, pos, endpos)
    index = text.find("eyJ", pos, endpos)
    while index >= 0:
        found = pattern.match(text, index, endpos)
        if found is not None:
            return found
        index = text.find("eyJ", index + 1, endpos)
    return None


def _aws_search(
    pattern: re.Pattern[str], scan: Scan, pos: int, endpos: int
) -> re.Match[str] | None:
    """Every access key id starts with one of `_AWS_PREFIX`'s literals: try the pattern only
    there."""
    text = scan.text
    starts = scan.starts("aws_access_key")
    if starts is not None:
        return _match_at(pattern, text, starts, pos, endpos)
    prefix = _AWS_PREFIX.search(text, pos, endpos)
    while prefix is not None:
        start = prefix.start()
        found = pattern.match(text, start, endpos)
        if found is not None:
            return found
        prefix = _AWS_PREFIX.search(text, start + 1, endpos)
    return None


def _match_at(
    pattern: re.Pattern[str], text: str, starts: list[int], pos: int, endpos: int
) -> re.Match[str] | None:
    """The first match of `pattern` at one of `starts` (sorted) in [pos, endpos)."""
    for start in starts[bisect.bisect_left(starts, pos) :]:
        if start >= endpos:
            return None
        found = pattern.match(text, start, endpos)
        if found is not None:
            return found
    return None


def _possible(kind: str, fallback: Callable[[Scan], bool]) -> Callable[[Scan], bool]:
    """Whether detector `kind` can match anywhere in the text: from the prefilter's pass when
    there is one, else by `fallback`."""

    def possible(scan: Scan) -> bool:
        starts = scan.starts(kind)
        return fallback(scan) if starts is None else bool(starts)

    return possible


def _pem_search(
    pattern: re.Pattern[str], scan: Scan, pos: int, endpos: int
) -> re.Match[str] | None:
    starts = scan.starts(PEM)
    if starts is not None:
        return _match_at(pattern, scan.text, starts, pos, endpos)
    return pattern.search(scan.text, pos, endpos)


class _Triggered(TypedDict):
    possible: Callable[[Scan], bool]
    search: Search


def _triggered(kind: str, needles: tuple[bytes, ...]) -> _Triggered:
    """`possible` and `search` for a detector whose every match starts where one of `needles`
    shows in the signature: the pattern is tried only where a candidate begins, where the
    prefilter says or, without one, where the signature shows a needle."""

    def search(pattern: re.Pattern[str], scan: Scan, pos: int, endpos: int) -> re.Match[str] | None:
        starts = scan.starts(kind)
        if starts is not None:
            return _match_at(pattern, scan.text, starts, pos, endpos)
        if not scan.ascii:
            return pattern.search(scan.text, pos, endpos)
        for trigger in scan.triggers(needles):
            if trigger < pos:
                continue
            if trigger >= endpos:
                return None
            found = pattern.match(scan.text, trigger, endpos)
            if found is not None:
                return found
        return None

    return {
        "possible": _possible(kind, lambda scan: bool(scan.triggers(needles))),
        "search": search,
    }


def _class_tail(
    pattern: re.Pattern[str], chars: str, window: int, firsts: str
) -> Callable[[str, int], int]:
    """A tail made only of `chars`: try the pattern (anchored at the end) at each place in
    the trailing run of `chars` where it can begin."""

    def tail(text: str, pos: int) -> int:
        size = len(text)
        if not size or text[-1] not in chars:
            return size
        for index in range(_run_start(text, size, chars, window, pos), size):
            if text[index] in firsts and pattern.match(text, index):
                return index
        return size

    return tail


_CARD = (
    r"(?<![0-9])(?:"
    r"[0-9]{13,19}"
    r"|[0-9]{4}(?P<cs>[ -])[0-9]{4}(?P=cs)[0-9]{4}(?P=cs)[0-9]{1,4}(?:(?P=cs)[0-9]{1,3})?"
    r"|[0-9]{4}(?P<as>[ -])[0-9]{6}(?P=as)[0-9]{4,5}"
    r")(?![0-9])"
)
_PEM_BEGIN = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----")
_PEM_END = re.compile(r"-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----")
_PEM_END_TAIL = re.compile(r"-{1,5}(?:E(?:N(?:D(?: [A-Z0-9 ]{0,40}-{0,5})?)?)?)?\Z")
_KEYWORDS = r"(?:password|passwd|passphrase|pwd|secret|token|api[_-]?key|access[_-]?key)"

DETECTORS: dict[str, Detector] = {
    d.name: d
    for d in (
        Detector(
            "credit_card",
            re.compile(_CARD),
            re.compile(r"(?<![0-9])[0-9](?:[ -]?[0-9]){0,18}[ -]?\Z"),
            32,
            accept=_accept_card,
            normalize=_digits,
            **_triggered("credit_card", _CARD_TRIGGERS),
            tail_classes=(_DIGITS + " -", _DIGITS),
            description="payment card numbers, 13 to 19 digits, contiguous or in groups of "
            "four (or Amex 4-6-5) separated by one space or dash; only Luhn-valid ones with a "
            "known issuer prefix (2, 30, 34-38, 4, 51-55, 6)",
        ),
        Detector(
            "email",
            re.compile(
                rf"(?<!{_EMAIL_LOCAL}){_EMAIL_LOCAL}{{1,64}}@[A-Za-z0-9-]{{1,63}}"
                r"(?:\.[A-Za-z0-9-]{1,63}){0,8}\.[A-Za-z]{2,24}(?![A-Za-z0-9-])"
            ),
            re.compile(rf"(?<!{_EMAIL_LOCAL}){_EMAIL_LOCAL}{{1,64}}(?:@[A-Za-z0-9.-]{{0,600}})?\Z"),
            700,
            normalize=str.lower,
            possible=lambda scan: "@" in scan.text,
            search=_email_search,
            tail_start=_email_tail,
            description="e-mail addresses (local@domain.tld)",
        ),
        Detector(
            "iban",
            re.compile(
                r"(?<![A-Za-z0-9])[A-Z]{2}[0-9]{2}"
                r"(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,3})?)(?![A-Za-z0-9])"
            ),
            re.compile(r"(?<![A-Za-z0-9])[A-Z](?:[A-Z](?:[0-9](?:[0-9][A-Z0-9 ]{0,40})?)?)?\Z"),
            48,
            accept=_accept_iban,
            **_triggered("iban", (b"AA00",)),
            tail_classes=(_UPPER + _DIGITS + " ", _UPPER),
            normalize=lambda value: value.replace(" ", "").upper(),
            description="IBANs, compact or in groups of four; only those whose mod-97 check "
            "digits are right",
        ),
        Detector(
            "us_ssn",
            re.compile(
                r"(?<![0-9-])(?!000|666|9[0-9]{2})[0-9]{3}-(?!00)[0-9]{2}-(?!0000)[0-9]{4}"
                r"(?![0-9-])"
            ),
            re.compile(r"(?<![0-9-])[0-9]{1,3}(?:-(?:[0-9]{1,2}(?:-[0-9]{0,4})?)?)?\Z"),
            16,
            normalize=_digits,
            **_triggered("us_ssn", (b"000s00s0000",)),
            tail_classes=(_DIGITS + "-", _DIGITS),
            description="US social security numbers written 123-45-6789 (not 000, 666 or 9xx "
            "areas, not 00 groups or 0000 serials)",
        ),
        Detector(
            "jwt",
            re.compile(
                rf"(?<!{_JWT_PART})eyJ{_JWT_PART}{{4,}}\.eyJ{_JWT_PART}{{4,}}\.{_JWT_PART}*"
                rf"(?!{_JWT_PART})"
            ),
            re.compile(
                rf"(?<!{_JWT_PART})e(?:y(?:J{_JWT_PART}*(?:\.(?:e(?:y(?:J{_JWT_PART}*"
                rf"(?:\.{_JWT_PART}*)?)?)?)?)?)?)?\Z"
            ),
            LOOKBEHIND,
            description="JSON web tokens (eyJ....eyJ....signature)",
            possible=_possible("jwt", lambda scan: "eyJ" in scan.text),
            search=_jwt_search,
            tail_start=_jwt_tail,
        ),
        Detector(
            "aws_access_key",
            re.compile(r"(?<![A-Z0-9])(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}(?![A-Z0-9])"),
            re.compile(r"(?<![A-Z0-9])A[A-Z0-9]{0,19}\Z"),
            24,
            description="AWS access key ids (AKIA..., ASIA..., 20 characters)",
            possible=_possible(
                "aws_access_key", lambda scan: _AWS_PREFIX.search(scan.text) is not None
            ),
            search=_aws_search,
            tail_classes=(_UPPER + _DIGITS, "A"),
        ),
        Detector(
            "pem_private_key",
            _PEM_BEGIN,
            re.compile(r"-{1,5}(?:B(?:E(?:G(?:I(?:N(?: [A-Z0-9 ]{0,40}-{0,5})?)?)?)?)?)?\Z"),
            64,
            description="PEM private key blocks: the body between BEGIN ... PRIVATE KEY and "
            "END ... PRIVATE KEY lines (multi-line; the BEGIN and END lines stay visible)",
            possible=_possible(PEM, lambda scan: "-----BEGIN " in scan.text),
            search=_pem_search,
            tail_classes=("-" + _UPPER + _DIGITS + " ", "-"),
        ),
        Detector(
            "password_assignment",
            re.compile(
                rf"(?i)(?<![A-Za-z0-9_.-])[A-Za-z0-9_.-]{{0,32}}{_KEYWORDS}[A-Za-z0-9_.-]{{0,32}}"
                r"[\"']?[ \t]{0,8}[=:][ \t]{0,8}"
                r"(?:\"(?P<dq>[^\"\r\n\x1b]{1,256})\"|'(?P<sq>[^'\r\n\x1b]{1,256})'"
                r"|(?P<bare>[^\s\"',;&\x1b]{1,256}))"
            ),
            re.compile(
                r"(?<![A-Za-z0-9_.-])[A-Za-z0-9_.-]{1,80}[\"']?[ \t]{0,8}"
                r"(?:[=:][ \t]{0,8}(?:\"[^\"\r\n\x1b]{0,256}|'[^'\r\n\x1b]{0,256}"
                r"|[^\s\"',;&\x1b]{0,256}))?\Z"
            ),
            400,
            value_groups=("dq", "sq", "bare"),
            # without the compiled prefilter it finds the keywords itself: no separate pass
            possible=lambda scan: scan.folds or scan.starts("password_assignment") != [],
            search=_password_search,
            tail_start=_password_tail,
            description='assignments such as password=..., secret: ..., api_key = "...", '
            "token=...: only the value is masked",
        ),
    )
}


# -- the compiled prefilter ------------------------------------------------------------------

# Where each built-in detector's matches can begin: (Hyperscan pattern, width). A match of the
# pattern ending at `end` puts a candidate at `end - width`; every match of the detector
# begins at such a candidate (a test checks it against the plain regular expressions). The
# `(?:^|[^...])` prefixes are the detectors' own lookbehinds: a run of a million digits is
# one candidate, not a million.
_TRIGGERS: dict[str, tuple[tuple[str, int], ...]] = {
    # 13 contiguous digits, or the first 13 characters of 4-4-4-... and 4-6-... groups: one
    # pattern sharing the leading four digits costs Hyperscan half of three separate ones.
    "credit_card": (
        (r"(?:^|[^0-9])[0-9]{4}(?:[0-9]{9}|[ -][0-9]{4}[ -][0-9]{3}|[ -][0-9]{6}[ -][0-9])", 13),
    ),
    "iban": ((r"(?:^|[^A-Za-z0-9])[A-Z]{2}[0-9]{2}", 4),),
    "us_ssn": ((r"(?:^|[^0-9-])[0-9]{3}-[0-9]{2}-[0-9]{4}", 11),),
    "jwt": ((r"(?:^|[^A-Za-z0-9_-])eyJ", 3),),
    "aws_access_key": (
        (r"(?:^|[^A-Z0-9])A3T", 3),
        (r"(?:^|[^A-Z0-9])A(?:KIA|SIA|BIA|CCA)", 4),
    ),
    PEM: ((r"-----BEGIN ", 11),),
    # case-insensitive (ASCII); texts with other case forms go to the pattern (Scan.folds)
    "password_assignment": tuple((word, len(word)) for word in _KEY_LITERALS),
}
_CASELESS = frozenset({"password_assignment"})


class Prefilter:
    """One Hyperscan database of the triggers of some detectors: one pass over a text finds
    where each of them may match (`Scan.starts`), instead of a pass (or five) per detector.
    The text is scanned as ASCII with every other character as `?` (one byte per character,
    so offsets are string indices; no trigger holds a `?` or a non-ASCII character)."""

    def __init__(self, kinds: frozenset[str]) -> None:
        assert hyperscan is not None
        self.kinds = kinds
        entries = [(kind, *trigger) for kind in sorted(kinds) for trigger in _TRIGGERS[kind]]
        self._kinds = tuple(kind for kind, _, _ in entries)
        self._widths = tuple(width for _, _, width in entries)
        database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        database.compile(
            expressions=[pattern.encode() for _, pattern, _ in entries],
            ids=list(range(len(entries))),
            elements=len(entries),
            flags=[
                hyperscan.HS_FLAG_CASELESS if kind in _CASELESS else 0 for kind, _, _ in entries
            ],
        )
        self._database = database
        self._local = threading.local()  # a scratch space per thread

    def run(self, text: str) -> dict[str, list[int]]:
        """Sorted candidate starts per detector (detectors without any are left out)."""
        if not text:
            return {}
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = hyperscan.Scratch(self._database)
        found: list[tuple[int, int]] = []
        append = found.append

        def on_match(index: int, start: int, end: int, flags: int, context: object) -> None:
            append((index, end))

        data = text.encode("ascii", "replace")
        self._database.scan(data, match_event_handler=on_match, scratch=scratch)
        starts: dict[str, list[int]] = {}
        kinds, widths = self._kinds, self._widths
        for index, end in found:
            starts.setdefault(kinds[index], []).append(end - widths[index])
        for kind, places in starts.items():
            if len(places) > 1:
                starts[kind] = sorted(set(places))
        return starts


_PREFILTERS: dict[frozenset[str], Prefilter | None] = {}
_PREFILTERS_LOCK = threading.Lock()


def prefilter_for(kinds: Iterable[str]) -> Prefilter | None:
    """The compiled prefilter for these detectors (shared, compiled once per set), or None
    when Hyperscan is not installed or none of them has triggers."""
    key = frozenset(kind for kind in kinds if kind in _TRIGGERS)
    if hyperscan is None or not key:
        return None
    with _PREFILTERS_LOCK:
        if key not in _PREFILTERS:
            _PREFILTERS[key] = Prefilter(key)
        return _PREFILTERS[key]


# -- rules -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MaskRule:
    """One `[[masks]]` entry, validated."""

    name: str
    column: str | None = None
    tables: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    detector: str | None = None
    pattern: str | None = None
    style: Style = Style.FULL
    groups: tuple[str, ...] = ()
    except_groups: tuple[str, ...] = ()

    def applies_to(self, groups: Iterable[str], target: str | None) -> bool:
        mine = set(groups)
        if self.groups and not mine.intersection(self.groups):
            return False
        if mine.intersection(self.except_groups):
            return False
        if self.targets and target is not None:
            return any(fnmatchcase(target, pattern) for pattern in self.targets)
        return True

    def matches_column(self, column: str, table: str | None) -> bool:
        """Column globs match case-insensitively (SQL folds names); an unknown table (None)
        counts as a match, so a rule limited to tables fails safe."""
        if self.column is None or not fnmatchcase(column.lower(), self.column.lower()):
            return False
        if self.tables and table is not None:
            return any(fnmatchcase(table.lower(), t.lower()) for t in self.tables)
        return True


@dataclass(frozen=True, slots=True)
class _Finder:
    """A detector or custom pattern, compiled, as the scanner uses it."""

    rule: MaskRule
    pattern: re.Pattern[str]
    tail: re.Pattern[str] | None
    tail_window: int
    accept: Callable[[str], int] | None
    value_groups: tuple[str, ...]
    normalize: Callable[[str], str]
    pem: bool = False
    possible: Callable[[Scan], bool] | None = None
    search: Search | None = None
    tail_start: Callable[[str, int], int] | None = None


@dataclass(slots=True)
class MaskHit:
    """A secret found in text: [start, end) matched, [vstart, vend) is replaced. `open` is a
    PEM block whose END line has not been seen (it runs to the end of the text)."""

    start: int
    end: int
    vstart: int
    vend: int
    finder: _Finder
    open: bool = False


def _width(pattern: str) -> int:
    """The longest match a custom pattern can make, capped at LOOKBEHIND."""
    try:
        parser: Any = re._parser  # type: ignore[attr-defined]
        high = int(parser.parse(pattern).getwidth()[1])
    except Exception:  # any trouble: be conservative
        return LOOKBEHIND
    return min(high, LOOKBEHIND)


def _finder(rule: MaskRule) -> _Finder:
    if rule.detector is not None:
        d = DETECTORS[rule.detector]
        return _Finder(
            rule,
            d.pattern,
            d.tail,
            d.tail_window,
            d.accept,
            d.value_groups,
            d.normalize,
            pem=rule.detector == PEM,
            possible=d.possible,
            search=d.search,
            tail_start=d.tail_start,
        )
    assert rule.pattern is not None
    width = _width(rule.pattern)
    # Any text in the last `width` characters may begin a match: hold all of it.
    return _Finder(
        rule, re.compile(rule.pattern), re.compile(r"[\s\S]+\Z"), width + 1, None, (), str
    )


# -- config ----------------------------------------------------------------------------------


def _key(index: int, name: str | None, fieldname: str) -> str:
    return entry_key("masks", index, name, fieldname)


def _strings(
    entry: Mapping[str, Any], key: str, where: Callable[[str], str], path: Any
) -> tuple[str, ...]:
    value = entry.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(path, where(key), "must be a string or a list of non-empty strings")
    return tuple(value)


def _pattern(pattern: object, where: Callable[[str], str], path: Path | str) -> str | None:
    """A rule's `pattern`: a regular expression that matches at least one character."""
    if pattern is None:
        return None
    if not isinstance(pattern, str) or not pattern:
        raise ConfigError(path, where("pattern"), "must be a non-empty regular expression")
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        problem = f"not a valid regular expression: {exc}"
        raise ConfigError(path, where("pattern"), problem) from None
    if compiled.search("") is not None:
        raise ConfigError(
            path,
            where("pattern"),
            "matches the empty string; it must match at least one character",
        )
    return pattern


def parse_rule(entry: object, index: int, path: Path | str) -> MaskRule:
    if not isinstance(entry, dict):
        raise ConfigError(path, f"masks #{index}", "must be a table ([[masks]])")
    name = entry.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ConfigError(
            path,
            _key(index, None, "name"),
            "missing or not a name (letters, digits, '.', '_' and '-'; MASK events and the "
            "review screen refer to it)",
        )

    def where(fieldname: str) -> str:
        return _key(index, name, fieldname)

    for key in entry:
        if key not in KNOWN_KEYS:
            raise ConfigError(
                path, where(key), f"unknown key (known: {', '.join(sorted(KNOWN_KEYS))})"
            )
    column = entry.get("column")
    if column is not None and (not isinstance(column, str) or not column):
        raise ConfigError(path, where("column"), "must be a non-empty column-name pattern")
    detector = entry.get("detector")
    if detector is not None and detector not in DETECTORS:
        raise ConfigError(
            path,
            where("detector"),
            f"unknown detector {detector!r} (known: {', '.join(DETECTORS)})",
        )
    pattern = _pattern(entry.get("pattern"), where, path)
    if detector is not None and pattern is not None:
        raise ConfigError(path, where("pattern"), "give either `detector` or `pattern`, not both")
    if column is None and detector is None and pattern is None:
        raise ConfigError(
            path,
            where("column"),
            "a rule needs `column`, `detector` or `pattern` to say what it masks",
        )
    style_text = entry.get("style", "full")
    try:
        style = Style(style_text)
    except ValueError:
        raise ConfigError(
            path, where("style"), f"must be one of {', '.join(s.value for s in Style)}"
        ) from None
    tables = _strings(entry, "tables", where, path)
    if tables and column is None:
        raise ConfigError(path, where("tables"), "only limits a `column` rule; add `column`")
    return MaskRule(
        name=name,
        column=column,
        tables=tables,
        targets=_strings(entry, "targets", where, path),
        detector=detector,
        pattern=pattern,
        style=style,
        groups=_strings(entry, "groups", where, path),
        except_groups=_strings(entry, "except_groups", where, path),
    )


@dataclass(frozen=True, slots=True)
class MaskPolicy:
    """All mask rules of a gateway, and the secret tokens are keyed with."""

    rules: tuple[MaskRule, ...]
    secret: bytes = b""

    @classmethod
    def from_config(cls, raw_masks: object, path: Path | str, secret: bytes = b"") -> MaskPolicy:
        """`[[masks]]` as tomllib gives it (a list of tables; None means no rules)."""
        rules = parse_named_entries(
            [] if raw_masks is None else raw_masks, path, "masks", parse_rule
        )
        for index, rule in enumerate(rules, start=1):
            if rule.style is Style.TOKEN and not secret:
                raise ConfigError(
                    path, _key(index, rule.name, "style"), "token needs a gateway secret"
                )
        return cls(tuple(rules), secret)

    @classmethod
    def from_raw_config(cls, raw: Mapping[str, Any], path: Path | str, secret: bytes) -> MaskPolicy:
        """The `[[masks]]` of a whole parsed config file (`GatewayConfig.raw`)."""
        return cls.from_config(raw.get("masks"), path, secret)

    def for_caller(self, groups: Iterable[str], target: str | None = None) -> Masker:
        groups = tuple(groups)
        return Masker(tuple(r for r in self.rules if r.applies_to(groups, target)), self.secret)

    def for_everyone(self) -> Masker:
        """Every rule, whoever and wherever: for text that leaves the gateway (webhooks)."""
        return Masker(self.rules, self.secret)


# -- what a terminal draws as nothing ----------------------------------------------------------

# Characters a terminal shows as nothing, so that `4111<NUL>1111...` still shows the whole
# card: C0 controls but TAB, LF, CR, BS (which move the cursor) and ESC; DEL; C1 controls;
# zero-width and invisible format characters (soft hyphen, ZWSP/ZWNJ/ZWJ, direction marks and
# embeddings, word joiner and the invisible operators, BOM, variation selectors, Hangul
# fillers). Detectors look at the text with and without them (`Masker.find`); what is replaced
# keeps them in place (`render`). Escape sequences are not among them: a colour change between
# digits still splits a secret (docs/masking.md, known gaps).
_INVISIBLE_RUN = (
    "(?:[\x00-\x07\x0b\x0c\x0e-\x1a\x1c-\x1f\x7f\x80-\x9f\xad\u034f\u061c"
    "\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0])+"
)
_INVISIBLE = re.compile(
    f"(?P<run>{_INVISIBLE_RUN})|" + ESCAPE.pattern  # other sequences stay whole (BEL ends OSC)
)
# The fast test (`_joined`): an invisible run inside (or at the end of) something a secret is
# made of, separators and quotes included (`4111<NUL> 1111 ...`, `password: <NUL>hunter2`
# show whole). Most output, coloured or not, has none, and skips the view.
_SHOWN_ASCII = bytes(range(0x20, 0x7F)) + b"\t\n\r\x08\x1b"
_NON_ASCII_INVISIBLE = re.compile(
    "[\x80-\x9f\xad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f"
    "\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0]"
)
_SECRETISH = "[0-9A-Za-z@._+/=:\"' -]"
_JOINED = re.compile(f"{_SECRETISH}{_INVISIBLE_RUN}(?:{_SECRETISH}|\\Z)")


def _joined(text: str) -> bool:
    """Whether the text has an invisible run inside (or at the end of) something a secret is
    made of: only then do detectors need the view without it. Printable ASCII text (most
    output) is told at C speed."""
    if text.isascii():
        if not text.encode("ascii").translate(None, _SHOWN_ASCII):
            return False
    elif (
        not text.encode("ascii", "replace").translate(None, _SHOWN_ASCII)
        and _NON_ASCII_INVISIBLE.search(text) is None
    ):
        return False
    return _JOINED.search(text) is not None


@dataclass(frozen=True, slots=True)
class _Visible:
    """Text with the invisible runs taken out, and the way back to the original's indices:
    `starts[i]` is where the i-th visible segment begins in the visible text, `origins[i]`
    where it begins in the original."""

    text: str
    starts: list[int]
    origins: list[int]
    size: int  # the original's length

    @staticmethod
    def of(text: str) -> _Visible | None:
        """The visible view, or None when the text has nothing invisible (the fast path)."""
        if not _joined(text):
            return None
        return _Visible.build(text)

    @staticmethod
    def build(text: str) -> _Visible | None:
        """The view, without the fast test (the caller has made it)."""
        runs = [run for run in _INVISIBLE.finditer(text) if run.group("run")]
        if not runs:
            return None
        parts: list[str] = []
        starts: list[int] = []
        origins: list[int] = []
        visible = 0
        last = 0
        for run in runs:
            if run.start() > last or not starts:
                starts.append(visible)
                origins.append(last)
                parts.append(text[last : run.start()])
                visible += run.start() - last
            last = run.end()
        starts.append(visible)
        origins.append(last)
        parts.append(text[last:])
        return _Visible("".join(parts), starts, origins, len(text))

    def start(self, index: int) -> int:
        """The original index of visible index `index` (a start: before any invisible run)."""
        if index >= len(self.text):
            return self.size
        segment = bisect.bisect_right(self.starts, index) - 1
        return self.origins[segment] + index - self.starts[segment]

    def end(self, index: int) -> int:
        """The original index just after visible character `index - 1` (an end)."""
        if index <= 0:
            return self.start(0)
        return self.start(index - 1) + 1

    def index(self, original: int) -> int:
        """The visible index of the first visible character at or after `original`."""
        segment = bisect.bisect_right(self.origins, original) - 1
        if segment < 0:
            return 0
        offset = original - self.origins[segment]
        following = self.starts[segment + 1] if segment + 1 < len(self.starts) else len(self.text)
        return min(self.starts[segment] + offset, following)


def _union(first: list[MaskHit], second: list[MaskHit]) -> list[MaskHit]:
    """Hits found in the text as sent and as shown, overlapping ones merged into one span
    (masking more, never less); an open PEM hit ends the list."""
    merged: list[MaskHit] = []
    for hit in sorted(first + second, key=lambda h: (h.start, -h.end)):
        if merged and hit.start < merged[-1].end and not merged[-1].open:
            last = merged[-1]
            merged[-1] = MaskHit(
                last.start,
                max(last.end, hit.end),
                min(last.vstart, hit.vstart),
                max(last.vend, hit.vend),
                last.finder,
                hit.open,
            )
        elif not merged or not merged[-1].open:
            merged.append(hit)
    return merged


def _shown(value: str) -> str:
    """What of `value` a terminal shows (the token of a secret does not change with NULs)."""
    view = _Visible.of(value)
    return value if view is None else view.text


def _replace_keeping_invisible(value: str, replace: Callable[[str], str]) -> str:
    """`replace` applied to what shows of `value`: a length-keeping style (full, last4) puts
    the invisible runs back where they were; a token replaces the whole value."""
    view = _Visible.of(value)
    if view is None:
        return replace(value)
    shown = replace(view.text)
    if len(shown) != len(view.text):
        return shown
    out: list[str] = []
    for index, start in enumerate(view.starts):
        stop = view.starts[index + 1] if index + 1 < len(view.starts) else len(view.text)
        origin = view.origins[index]
        if index:
            previous_end = view.origins[index - 1] + (start - view.starts[index - 1])
            out.append(value[previous_end:origin])
        elif origin:
            out.append(value[:origin])
        out.append(shown[start:stop])
    tail = view.origins[-1] + (len(view.text) - view.starts[-1])
    out.append(value[tail:])
    return "".join(out)


# -- the masker ------------------------------------------------------------------------------


def star_text(text: str) -> str:
    """Every character `*` but line breaks and escape sequences (kept as they are)."""
    if "\x1b" not in text and "\n" not in text and "\r" not in text:
        return "*" * len(text)
    if "\x1b" not in text:
        return re.sub(r"[^\r\n]", "*", text)
    out: list[str] = []
    last = 0
    for seq in ESCAPE.finditer(text):
        out.append(re.sub(r"[^\r\n]", "*", text[last : seq.start()]))
        out.append(seq.group())
        last = seq.end()
    out.append(re.sub(r"[^\r\n]", "*", text[last:]))
    return "".join(out)


_ALNUM = re.compile(r"[^\W_]")


def last4_text(value: str) -> str:
    """Letters and digits but the last four as `*`; everything masked below LAST4_MIN."""
    found = _ALNUM.findall(value)
    if len(found) < LAST4_MIN:
        return star_text(value)
    cut = len(value)
    for _ in range(4):  # the start of the fourth letter or digit from the end
        cut -= 1
        while not value[cut].isalnum() or value[cut] == "_":
            cut -= 1
    return _ALNUM.sub("*", value[:cut]) + value[cut:]


@dataclass(slots=True)
class ColumnPlan:
    """What to do with each column of one result (built once per RowDescription)."""

    masker: Masker
    columns: tuple[str, ...]
    whole: tuple[MaskRule | None, ...]
    scan: tuple[tuple[_Finder, ...], ...]
    record: bool = True  # False: no acts (a caller that counts per result, not per value)

    @property
    def active(self) -> bool:
        return any(self.whole) or any(self.scan)

    def mask_row(
        self, values: Sequence[bytes | str | None]
    ) -> tuple[list[bytes | str | None], list[MaskAct]]:
        """A row's values (text format) with masked ones replaced; NULLs stay NULL."""
        out = list(values)
        acts: list[MaskAct] = []
        for index, value in enumerate(values):
            if value is None or index >= len(self.columns):
                continue
            rule = self.whole[index]
            if rule is not None:
                out[index], act = self.masker._mask_whole(
                    rule, self.columns[index], value, self.record
                )
                if act is not None:
                    acts.append(act)
            elif self.scan[index]:
                out[index], found = self.masker._scan_value(
                    self.scan[index], self.columns[index], value, self.record
                )
                acts.extend(found)
        return out, acts


@dataclass(slots=True)
class Masker:
    """The rules for one caller and target. Use from one session; it keeps no state between
    calls (a stream's state lives in `MaskStream`)."""

    rules: tuple[MaskRule, ...]
    secret: bytes = b""
    prefilter: bool = True  # False: every detector makes its own passes (the reference path)
    text_finders: tuple[_Finder, ...] = field(init=False)
    _column_finders: tuple[_Finder, ...] = field(init=False)
    _keyed: hmac.HMAC = field(init=False, repr=False)
    _prefilter: Prefilter | None = field(init=False, repr=False)
    _tokens: dict[tuple[Callable[[str], str], str], str] = field(init=False, repr=False)
    # the last text `find` saw and whether it needs the visible view (`hold_from` follows it)
    _last_joined: tuple[str, bool] | None = field(init=False, repr=False, default=None)
    _plans: dict[
        tuple[
            tuple[str, ...],
            tuple[str | None, ...] | None,
            bool,
            tuple[MaskRule | None, ...] | None,
        ],
        ColumnPlan,
    ] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._keyed = hmac.new(self.secret, digestmod=hashlib.sha256)
        self._tokens = {}
        self._plans = {}
        finders = [_finder(r) for r in self.rules if r.detector or r.pattern]
        self.text_finders = tuple(f for f in finders if f.rule.column is None)
        self._column_finders = tuple(f for f in finders if f.rule.column is not None)
        detectors = (r.detector for r in self.rules if r.detector is not None)
        self._prefilter = prefilter_for(detectors) if self.prefilter else None

    @property
    def masks_text(self) -> bool:
        """False when no rule applies to terminal text: a stream can be skipped."""
        return bool(self.text_finders)

    @property
    def uses_columns(self) -> bool:
        """True when a rule names columns: masking SQL values then needs the column names."""
        return any(rule.column is not None for rule in self.rules)

    def token(self, finder_or_rule: _Finder | None, value: str) -> str:
        """The keyed token of a value (normalized as its detector says), `make_token`'s.
        Tokens are cached per masker (one session): output repeats the same few values (an
        author's e-mail address on every `git log` entry), and an HMAC costs microseconds.
        The cache is bounded (TOKEN_CACHE values) and lives only in this process's memory."""
        normalize = finder_or_rule.normalize if finder_or_rule is not None else str
        key = (normalize, value)
        cache = self._tokens
        token = cache.get(key)
        if token is None:
            digest = self._keyed.copy()
            digest.update(normalize(value).encode("utf-8", "surrogateescape"))
            token = TOKEN_PREFIX + digest.hexdigest()[:TOKEN_HEX]
            if len(cache) >= TOKEN_CACHE:
                cache.clear()
            cache[key] = token
        return token

    # -- text ----------------------------------------------------------------------------

    def find(
        self, text: str, pos: int = 0, finders: Sequence[_Finder] | None = None
    ) -> list[MaskHit]:
        """Every secret in text[pos:], leftmost first, never overlapping; on the same start the
        rule listed first wins. Lookbehinds may look at text before `pos`. Detectors see the
        text as a terminal shows it: control and zero-width characters between the digits of
        a card (`_INVISIBLE`) do not hide it; the hit spans them in `text`."""
        finders = self.text_finders if finders is None else finders
        if not finders:
            return []
        scan = Scan(text, self._prefilter if len(text) >= PREFILTER_MIN else None)
        direct = self._find(text, pos, finders, scan)
        joined = scan.joined()
        self._last_joined = (text, joined)
        if not joined or (direct and direct[-1].open):
            return direct
        view = _Visible.build(text)
        if view is None:
            return direct
        seen = [
            MaskHit(
                view.start(hit.start),
                view.end(hit.end) if not hit.open else len(text),
                view.start(hit.vstart),
                view.end(hit.vend) if not hit.open else len(text),
                hit.finder,
                hit.open,
            )
            for hit in self._find(view.text, view.index(pos), finders)
        ]
        return _union(direct, seen)

    def _find(
        self, text: str, pos: int, finders: Sequence[_Finder], scan: Scan | None = None
    ) -> list[MaskHit]:
        if scan is None:
            scan = Scan(text, self._prefilter if len(text) >= PREFILTER_MIN else None)
        finders = [f for f in finders if f.possible is None or f.possible(scan)]
        if not finders:
            return []
        has_escape = "\x1b" in text
        nexts: list[MaskHit | None] = [self._next(f, scan, pos, has_escape) for f in finders]
        hits: list[MaskHit] = []
        while True:
            best: MaskHit | None = None
            best_index = -1
            for index, hit in enumerate(nexts):
                if hit is not None and (best is None or hit.start < best.start):
                    best, best_index = hit, index
            if best is None:
                return hits
            hits.append(best)
            if best.open:
                return hits
            for index, hit in enumerate(nexts):
                if hit is not None and (index == best_index or hit.start < best.end):
                    nexts[index] = self._next(finders[index], scan, best.end, has_escape)

    def _next(self, finder: _Finder, scan: Scan, pos: int, has_escape: bool) -> MaskHit | None:
        """The first accepted hit of one finder at or after `pos`."""
        pattern = finder.pattern
        search = finder.search
        text = scan.text
        endpos = len(text)
        while pos <= endpos:
            if search is None:
                match = pattern.search(text, pos, endpos)
            else:
                match = search(pattern, scan, pos, endpos)
            if match is None:
                if endpos == len(text):
                    return None
                pos, endpos = endpos, len(text)  # past a sequence that cut a hit short
                continue
            start, end = match.span()
            if has_escape:
                inside = _escape_covering(text, start)
                if inside is not None:
                    pos = inside
                    if endpos < pos:
                        endpos = len(text)
                    continue
                if not finder.pem:
                    escape = text.find("\x1b", start, end)
                    if escape >= 0:  # runs into a sequence: look again before it
                        pos, endpos = start, escape
                        continue
            if finder.pem:
                return _pem_hit(finder, text, match)
            if finder.accept is not None:
                length = finder.accept(match.group())
                if not length:
                    pos = start + 1
                    continue
                end = start + length
            vstart, vend = start, end
            for name in finder.value_groups:
                if match.group(name) is not None:
                    vstart, vend = match.span(name)
                    break
            return MaskHit(start, end, vstart, vend, finder)
        return None

    def render(
        self,
        text: str,
        start: int,
        end: int,
        hits: Sequence[MaskHit],
        measure: Callable[[str], int] = len,
        record: bool = True,
        *,
        offset: int = 0,
        column: str | None = None,
    ) -> tuple[str, list[MaskAct]]:
        """text[start:end] with the hits (all inside it) replaced. Acts are positioned in
        `measure` units (characters by default) of the returned text, plus `offset`; their
        length is the measure of the value replaced, and they name `column`. `record=False`
        makes no acts (nor tokens, unless the style shows them)."""
        if not hits:
            return text[start:end], []
        out: list[str] = []
        acts: list[MaskAct] = []
        last = start
        size = offset
        seen = self._last_joined
        invisible = seen[1] if seen is not None and seen[0] is text else _joined(text)
        for hit in hits:
            before = text[last : hit.vstart]
            out.append(before)
            size += measure(before)
            value = text[hit.vstart : hit.vend]
            if not invisible or hit.finder.pem:
                # (a PEM body is all `*` as a stream masks it before its END line: NULs too)
                replacement = self.replace(hit.finder, value)
                shown = value
            else:
                replace = functools.partial(self.replace, hit.finder)
                replacement = _replace_keeping_invisible(value, replace)
                shown = _shown(value)
            if record:
                token = self.token(hit.finder, shown)
                acts.append(MaskAct(hit.finder.rule.name, size, measure(value), token, column))
            out.append(replacement)
            size += measure(replacement)
            last = hit.vend
        out.append(text[last:end])
        return "".join(out), acts

    def replace(self, finder: _Finder, value: str) -> str:
        style = finder.rule.style
        if finder.pem or style is Style.FULL:
            return star_text(value)
        if style is Style.LAST4:
            return last4_text(value)
        return self.token(finder, value)

    def mask_text(self, text: str) -> tuple[str, list[MaskAct]]:
        """Terminal (or any) text with every secret the text rules find replaced."""
        hits = self.find(text)
        if not hits:
            return text, []
        return self.render(text, 0, len(text), hits)

    # -- SQL values ------------------------------------------------------------------------

    def column_rule(self, column: str, table: str | None = None) -> MaskRule | None:
        """The rule masking a column's whole value, if any (first in config order)."""
        for rule in self.rules:
            if (
                rule.detector is None
                and rule.pattern is None
                and rule.matches_column(column, table)
            ):
                return rule
        return None

    def value_finders(self, column: str, table: str | None = None) -> tuple[_Finder, ...]:
        """The detectors that scan this column's values: text rules plus column-limited ones."""
        limited = tuple(f for f in self._column_finders if f.rule.matches_column(column, table))
        return limited + self.text_finders if limited else self.text_finders

    def plan(
        self,
        columns: Sequence[str],
        tables: Sequence[str | None] | None = None,
        *,
        record: bool = True,
        forced: Sequence[MaskRule | None] | None = None,
    ) -> ColumnPlan:
        """What to do with each column of a result: build once per RowDescription. `tables`
        gives each column's table name (None when unknown). `forced` gives, per column, a
        whole-value rule that applies whatever the column's name (its value comes from a
        masked column: proxy/pg/lineage.py). Plans are cached per masker (a session runs the
        same few queries again and again); a plan is never changed."""
        forced_key = tuple(forced) if forced is not None and any(forced) else None
        key = (tuple(columns), tuple(tables) if tables is not None else None, record, forced_key)
        cached = self._plans.get(key)
        if cached is not None:
            return cached
        tables = tables if tables is not None else [None] * len(columns)
        whole = tuple(self.column_rule(c, t) for c, t in zip(columns, tables, strict=True))
        if forced_key is not None:
            whole = tuple(
                w if w is not None else (forced_key[i] if i < len(forced_key) else None)
                for i, w in enumerate(whole)
            )
        scan = tuple(
            () if w is not None else self.value_finders(c, t)
            for c, t, w in zip(columns, tables, whole, strict=True)
        )
        plan = ColumnPlan(self, tuple(columns), whole, scan, record)
        if len(self._plans) >= PLAN_CACHE:
            self._plans.clear()
        self._plans[key] = plan
        return plan

    def mask_value(
        self, column: str, table: str | None, value: bytes | str | None
    ) -> tuple[bytes | str | None, MaskAct | None]:
        """One SQL value (text format); the act is the first replacement made, if any."""
        masked, acts = self.mask_cell(column, table, value)
        return masked, acts[0] if acts else None

    def mask_cell(
        self, column: str, table: str | None, value: bytes | str | None
    ) -> tuple[bytes | str | None, list[MaskAct]]:
        """Like `mask_value`, with every act."""
        if value is None:
            return None, []
        rule = self.column_rule(column, table)
        if rule is not None:
            masked, act = self._mask_whole(rule, column, value)
            return masked, [act] if act is not None else []
        return self._scan_value(self.value_finders(column, table), column, value)

    def _mask_whole(
        self, rule: MaskRule, column: str, value: bytes | str, record: bool = True
    ) -> tuple[bytes | str, MaskAct | None]:
        if rule.style is Style.FULL and not record:
            return (FULL_VALUE.encode() if isinstance(value, bytes) else FULL_VALUE), None
        text = value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value
        token = self.token(None, text) if record or rule.style is Style.TOKEN else ""
        if rule.style is Style.FULL:
            masked = FULL_VALUE
        elif rule.style is Style.LAST4:
            masked = last4_text(text) if len(_ALNUM.findall(text)) >= LAST4_MIN else FULL_VALUE
        else:
            masked = token
        act = MaskAct(rule.name, 0, len(value), token, column) if record else None
        if isinstance(value, bytes):
            return masked.encode("utf-8", "surrogateescape"), act
        return masked, act

    def _scan_value(
        self, finders: Sequence[_Finder], column: str, value: bytes | str, record: bool = True
    ) -> tuple[bytes | str, list[MaskAct]]:
        if not finders:
            return value, []
        text = value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value
        hits = self.find(text, 0, finders)
        if not hits:
            return value, []
        masked, acts = self.render(text, 0, len(text), hits, record=record, column=column)
        if isinstance(value, bytes):
            return masked.encode("utf-8", "surrogateescape"), acts
        return masked, acts

    # -- streams ---------------------------------------------------------------------------

    def hold_from(self, text: str, pos: int) -> int:
        """The earliest index >= pos from which the end of `text` could still be the beginning
        of a secret, or of an escape sequence: what a stream must hold back. Invisible
        characters (`_INVISIBLE`) neither end nor start a possible secret."""
        last = self._last_joined
        joined = last[1] if last is not None and last[0] is text else _joined(text)
        view = _Visible.build(text) if joined else None
        cut = self._hold_from(text, pos)  # as sent and as shown, like `find`
        if view is not None:
            cut = min(cut, max(pos, view.start(self._hold_from(view.text, view.index(pos)))))
        escape = text.rfind("\x1b", max(pos, len(text) - LOOKBEHIND))
        if escape >= 0 and escape < cut and PARTIAL_ESCAPE.match(text, escape):
            cut = escape
        return cut

    def _hold_from(self, text: str, pos: int) -> int:
        cut = len(text)
        for finder in self.text_finders:
            if finder.tail_start is not None:
                cut = min(cut, finder.tail_start(text, pos))
            elif finder.tail is not None:
                found = finder.tail.search(text, max(pos, len(text) - finder.tail_window))
                if found is not None and found.start() < cut:
                    cut = found.start()
        return cut


def _escape_covering(text: str, index: int) -> int | None:
    """If text[index] lies inside an escape sequence (or one cut short at the end), the end
    of that sequence."""
    escape = text.rfind("\x1b", 0, index + 1)
    if escape < 0:
        return None
    if escape == index:
        return None  # a hit never starts with ESC; the caller's pattern decides
    seq = ESCAPE.match(text, escape)
    if seq is not None:
        return seq.end() if seq.end() > index else None
    if PARTIAL_ESCAPE.match(text, escape):
        return len(text)
    return None


def _pem_hit(finder: _Finder, text: str, begin: re.Match[str]) -> MaskHit:
    end = _PEM_END.search(text, begin.end())
    if end is None:
        return MaskHit(begin.start(), len(text), begin.end(), len(text), finder, open=True)
    return MaskHit(begin.start(), end.end(), begin.end(), end.start(), finder)


def pem_end_search(text: str, pos: int) -> re.Match[str] | None:
    return _PEM_END.search(text, pos)


def pem_end_tail(text: str, pos: int) -> int:
    """Where a possible beginning of an END line at the end of `text` starts (len if none)."""
    found = _PEM_END_TAIL.search(text, max(pos, len(text) - 64))
    return found.start() if found is not None else len(text)
