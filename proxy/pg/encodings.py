"""Client encodings, as the gateway reads SQL in them: which ones a session may use (`CODECS`:
UTF8, the single-byte encodings, the EUC family; never a client-only encoding whose multibyte
characters hold ASCII bytes, where a backslash the gateway's parser sees may be part of a
character for the server), the refusals for the others and for
`standard_conforming_strings = off`, and `EncodingState`: the codec a session reads in now,
and whether the client's next messages must wait for the server's word on a change."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from proxy.pg import classify as sqlclass

INSUFFICIENT_PRIVILEGE = "42501"
FEATURE_NOT_SUPPORTED = "0A000"


# Encoding names as PostgreSQL compares them: lower case, letters and digits only.
UTF8_NAMES = frozenset({"utf8", "unicode"})
# Client-only encodings whose second byte of a character may be an ASCII byte (`\`).
SPLIT_ASCII_ENCODINGS = frozenset(
    {
        "big5",
        "win950",
        "cp950",
        "windows950",
        "gbk",
        "win936",
        "cp936",
        "windows936",
        "gb18030",
        "sjis",
        "mskanji",
        "shiftjis",
        "win932",
        "cp932",
        "windows932",
        "shiftjis2004",
        "uhc",
        "win949",
        "cp949",
        "windows949",
        "johab",
    }
)


# The client encodings the gateway reads SQL in, by PostgreSQL's names and aliases (normalized
# as above), with the Python codec of each. All are ASCII-compatible and no byte of a
# multibyte character is below 0x80, so quotes, backslashes and semicolons are where the
# server sees them. SQL_ASCII is read as UTF-8: the server does not say what its bytes are.
_SINGLE_BYTE = {
    "latin1": "latin-1",
    "latin2": "iso8859-2",
    "latin3": "iso8859-3",
    "latin4": "iso8859-4",
    "latin5": "iso8859-9",
    "latin6": "iso8859-10",
    "latin7": "iso8859-13",
    "latin8": "iso8859-14",
    "latin9": "iso8859-15",
    "latin10": "iso8859-16",
    "iso88595": "iso8859-5",
    "iso88596": "iso8859-6",
    "iso88597": "iso8859-7",
    "iso88598": "iso8859-8",
    "koi8r": "koi8-r",
    "koi8": "koi8-r",
    "koi8u": "koi8-u",
    "win866": "cp866",
    "alt": "cp866",
    "win874": "cp874",
    "win": "cp1251",
    "abc": "cp1258",
    "tcvn": "cp1258",
    "tcvn5712": "cp1258",
    "vscii": "cp1258",
    "euccn": "gb2312",
    "eucjp": "euc_jp",
    "eucjis2004": "euc_jis_2004",
    "euckr": "euc_kr",
}
_ISO_ALIASES = {"1": 1, "2": 2, "3": 3, "4": 4, "9": 5, "10": 6, "13": 7, "14": 8, "15": 9}
CODECS: dict[str, str] = {
    "utf8": "utf-8",
    "unicode": "utf-8",
    "sqlascii": "utf-8",
    **_SINGLE_BYTE,
    **{f"iso8859{iso}": _SINGLE_BYTE[f"latin{n}"] for iso, n in _ISO_ALIASES.items()},
    "iso885916": "iso8859-16",
    **{f"win{n}": f"cp{n}" for n in range(1250, 1259)},
    **{f"windows{n}": f"cp{n}" for n in (*range(1250, 1259), 866, 874)},
}


def _encoding_name(value: str) -> str:
    return re.sub(r"[^a-z0-9]", "", value.lower())


def codec_of(value: str | None) -> str | None:
    """The Python codec the gateway reads a client_encoding in, or None (not readable)."""
    return CODECS.get(_encoding_name(value)) if value is not None else None


def encoding_refusal(value: str | None, *, masking: bool) -> tuple[str, str] | None:
    """Why the session may not use client_encoding `value` (None: a value the gateway could
    not tell before it runs): (sqlstate, message), or None when it may."""
    if value is None:
        if not masking:
            return None
        return (
            INSUFFICIENT_PRIVILEGE,
            "hoop: masking rules apply to this session and the gateway masks UTF8 text only; "
            "it cannot tell which client_encoding this would set, so it is not allowed",
        )
    name = _encoding_name(value)
    if name in SPLIT_ASCII_ENCODINGS:
        return (
            FEATURE_NOT_SUPPORTED,
            f"hoop: client_encoding {value} is not allowed: its characters may contain "
            "backslash and other ASCII bytes, so the gateway's SQL parser could read other "
            "statements than the server does (use UTF8)",
        )
    if masking and name not in UTF8_NAMES:
        return (
            INSUFFICIENT_PRIVILEGE,
            f"hoop: masking rules apply to this session and the gateway masks UTF8 text only, "
            f"so client_encoding {value} is not allowed (use UTF8, e.g. PGCLIENTENCODING=UTF8)",
        )
    if name not in CODECS:
        return (
            FEATURE_NOT_SUPPORTED,
            f"hoop: client_encoding {value} is not allowed: the gateway cannot read SQL in it "
            "(use UTF8, or a single-byte encoding such as LATIN1 or WIN1252)",
        )
    return None


def conforming_refusal(value: str | None) -> tuple[str, str] | None:
    """Why the session may not set standard_conforming_strings to `value` (None: a value
    only known when it runs): (sqlstate, message), or None when it may. Off, the server
    reads `\\'` in a `'...'` string as an escaped quote, the gateway's parser as a backslash
    then a quote: `select 'x\\'' ; drop table t; --'` is one SELECT to the gateway (its
    string goes on after the doubled quote) and a SELECT and a DROP to the server."""
    if sqlclass.setting_is_true(value):
        return None
    return (
        FEATURE_NOT_SUPPORTED,
        "hoop: standard_conforming_strings must stay on: with it off the server reads "
        "backslashes in strings differently from the gateway's SQL parser",
    )


# What may change client_encoding without the classifier naming a value: RESET, SET NAMES
# DEFAULT, RESET ALL, DISCARD ALL, a set_config whose name is computed.
_ENCODING_HINT = re.compile(
    r"client_encoding|\bnames\b|\breset\b|\bdiscard\b|set_config", re.IGNORECASE
)


def may_set_encoding(statements: Sequence[sqlclass.Statement], sql: str) -> bool:
    """Whether running this may change the session's client_encoding (see EncodingState.wait)."""
    if any(s.encodings or s.classes & _SETS_SETTINGS or writes_settings(s) for s in statements):
        return True
    return bool(_ENCODING_HINT.search(sql))


# set_config with a computed name, RESET ALL (the classifier's "set_role"): any setting. A DO
# block is code any role may run, which may set anything through dynamic SQL.
_SETS_SETTINGS = frozenset({"set_role", "do_block"})
# Statements that may set client_encoding to a value not written in them (RESET, DEFAULT,
# DISCARD ALL, a DO block, text the parser rejected), when `_ENCODING_HINT` finds them.
_UNNAMED_ENCODING_CLASSES = frozenset({"utility", "do_block", sqlclass.UNPARSABLE}) | _SETS_SETTINGS


def writes_settings(statement: sqlclass.Statement) -> bool:
    """An UPDATE of pg_settings: its rule calls set_config with the row's name."""
    if "write" not in statement.classes:
        return False
    return any(t.rpartition(".")[2].strip('"').lower() == "pg_settings" for t in statement.tables)


def unnamed_encoding(statements: Sequence[sqlclass.Statement]) -> bool:
    """Whether a statement that may change client_encoding may set it to a value the
    classifier did not find written in it (then the gateway cannot know the new one)."""
    return any(s.classes & _UNNAMED_ENCODING_CLASSES or writes_settings(s) for s in statements)


# Statements that may end a transaction or roll back to a savepoint (procedures and DO
# blocks may COMMIT or ROLLBACK), which sets back a client_encoding changed inside it.
_ENDS_TRANSACTION_CLASSES = frozenset({"transaction", "utility", "do_block", sqlclass.UNPARSABLE})


def may_end_transaction(statements: Sequence[sqlclass.Statement]) -> bool:
    return not statements or any(s.classes & _ENDS_TRANSACTION_CLASSES for s in statements)


@dataclass(slots=True)
class EncodingState:
    """The session's client_encoding as the gateway follows it.

    - `codec`: what client text is read in now; `confirmed`: as the server last reported it.
    - `wait`: a statement that may change it went upstream, so the client's next messages
      wait for the server's answer (and its ParameterStatus), to be read in the encoding the
      server reads them in. In the extended protocol from the batch's Sync on (`after_sync`).
    - `unknown`: the batch set it to a computed value; the rest of the batch is refused.
    - `may_revert`: it may have changed inside a transaction that has not ended; its end
      (COMMIT of a SET LOCAL, ROLLBACK, ROLLBACK TO, a procedure's COMMIT) sets it back, so
      until a ReadyForQuery says idle, such statements count as encoding changes.
    """

    codec: str = "utf-8"
    confirmed: str = "utf-8"
    wait: bool = False
    after_sync: bool = False
    unknown: bool = False
    may_revert: bool = False

    def use(self, codec: str) -> bool:
        """Read in `codec` from now on; whether it changed."""
        if codec == self.codec:
            return False
        self.codec = codec
        return True

    def confirm(self, value: str | None) -> bool:
        """The server reported `value`; whether the codec changed."""
        codec = codec_of(value)
        if codec is None:
            return False
        self.confirmed = codec
        return self.use(codec)

    def may_change(self, statements: Sequence[sqlclass.Statement], sql: str) -> bool:
        """`may_set_encoding`, and inside a transaction that changed client_encoding also
        whatever may end that transaction (it sets the encoding back)."""
        if self.may_revert and may_end_transaction(statements):
            return True
        return may_set_encoding(statements, sql)

    def executed(self, statements: Sequence[sqlclass.Statement]) -> bool:
        """An Execute of statements that may change it went upstream. The server reads the
        rest of the batch in the new encoding at once (if it fails, it skips the rest); its
        Sync's ReadyForQuery confirms which it is. A transaction's end sets back a value the
        gateway has not kept: unknown. Whether the codec changed."""
        reverts = self.may_revert and may_end_transaction(statements)
        self.may_revert = True
        self.after_sync = True
        values = {value for statement in statements for value in statement.encodings}
        unnamed = reverts or unnamed_encoding(statements)
        if None in values or (unnamed and not values):
            self.unknown = True  # a value only known when it runs
        elif len(values) == 1 and (codec := codec_of(values.pop())) is not None:
            return self.use(codec)
        return False
