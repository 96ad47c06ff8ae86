"""Rules -> verdict: who may run what where, decided in order, first match wins. Pure.

The gateway config's `[[rules]]` table becomes `Rule` objects here, validated whole, with errors
that name the rule, the key and what is wrong. A rule matches on who (users, groups, service
accounts), where (targets) and what (`shell` globs over each simple command, `exec` globs over
an exec request's whole command string, `sql` statement classes, `files` globs over the paths
of file operations with their `operations`) and gives an action: allow, deny (with a message)
or review (approver groups, approvals needed, a timeout).

File rules judge what a file operation does to which path, however it is asked for: an SFTP
request (sftp, scp in SFTP mode), a legacy scp transfer, or a shell redirect (`< f`, `> f`,
`exec 3<f`). Paths are compared after lexical normalisation (`//`, `.`, `..`); a relative path
whose directory the gateway does not know starts with an unknown piece, so a rule about an
absolute directory only *may* match it (and uncertainty is never allowed silently).

Uncertainty is never allowed silently. A simple command whose program is unknown (`$X -rf /`)
gets the `[policy] unparsable` action (review or deny); so does a command that only *may*
match a deny rule, depending on what a variable or glob expands to (`rm $F` against
`rm -rf *`). A `review` rule that may match still holds for review. An `allow` rule only
allows what it matches for every possible expansion.

Just-in-time access (`jit = true` on a target) is decided by `may_start_session`, given the
live grants and the time, which the caller passes in.
"""

from __future__ import annotations

import enum
import posixpath
import re
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Protocol

from proxy.config import ConfigError, entry_key, parse_named_entries
from proxy.line_detector import CommandLine
from proxy.names import fold_name
from proxy.shell import (
    UNKNOWN,
    LineResult,
    OptionsFirst,
    Piece,
    SimpleCommand,
    Unparsable,
    Word,
    analyse_line,
    analyse_paste,
)

DEFAULT_REVIEW_TIMEOUT = "10m"
MAX_REVIEW_TIMEOUT_SECONDS = 7 * 24 * 3600


class Action(enum.Enum):
    ALLOW = "allow"
    REVIEW = "review"
    DENY = "deny"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {Action.ALLOW: 0, Action.REVIEW: 1, Action.DENY: 2}


class Basis(enum.Enum):
    """Why a verdict came out the way it did, for the user's message and the audit log."""

    RULE = "rule"  # a rule matched
    MAY_MATCH = "may-match"  # a restricting rule matches for some values of an expansion
    OPAQUE = "opaque"  # the program is only known at run time
    UNPARSABLE = "unparsable"  # the parser could not read the line
    DEFAULT = "default"  # no rule matched


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking. Groups come from the identity source (config, LDAP or OIDC); `kind` is
    "person" or "agent" (an OIDC client acting for its `owner`, a person or `group:NAME`)."""

    name: str
    groups: frozenset[str] = frozenset()
    service_account: bool = False
    kind: str = "person"
    owner: str | None = None
    client_id: str | None = None
    expires_at: float | None = None  # when the token that proved the caller expires

    @staticmethod
    def of(identity: Any) -> Caller:
        """The caller an authenticated identity (proxy.auth.Identity) is, for policy."""
        return Caller(
            identity.name,
            frozenset(identity.groups),
            identity.service_account,
            getattr(identity, "kind", "person"),
            getattr(identity, "owner", None),
            getattr(identity, "client_id", None),
            getattr(identity, "expires_at", None),
        )

    @property
    def agent(self) -> bool:
        """An OIDC agent (`[[agents]]`), held to the stricter defaults. Local service
        accounts keep their own rules (`service_accounts`) and the defaults they had."""
        return self.kind == "agent"

    def matches(self, selector: str) -> bool:
        """One `callers` entry: `agent:*`, `agent:NAME`, `person:*`, `person:NAME`,
        `user:NAME` (either kind), `group:NAME`, `owner:NAME` (agents NAME answers for)."""
        prefix, _, pattern = selector.partition(":")
        if prefix == "group":
            return _listed_glob(self.groups, pattern)
        if prefix == "owner":
            return self.agent and self.owner is not None and _same_name(self.owner, pattern)
        if prefix in ("agent", "person") and self.agent != (prefix == "agent"):
            return False
        return _listed_glob((self.name,), pattern)


@dataclass(frozen=True, slots=True)
class Review:
    """How a hold is decided: distinct approvals from members of `approvers` within a time."""

    approvers: tuple[str, ...]
    approvals: int
    timeout_seconds: int


@dataclass(frozen=True, slots=True)
class Verdict:
    """The decision for one request. `command` is the simple command (as the user reads it)
    that caused a deny or review; `rule` is None when a default decided."""

    action: Action
    basis: Basis
    message: str
    rule: str | None = None
    command: str | None = None
    review: Review | None = None

    @property
    def approvers(self) -> tuple[str, ...]:
        return self.review.approvers if self.review else ()

    @property
    def approvals(self) -> int:
        return self.review.approvals if self.review else 0

    @property
    def timeout_seconds(self) -> int | None:
        return self.review.timeout_seconds if self.review else None

    def recorded(self) -> tuple[str, str, str]:
        """(action, rule, message) as a VERDICT event holds them: the one place a verdict
        becomes recording fields, whichever layer records it."""
        return self.action.value, self.rule or "", self.message

    def describe(self) -> str:
        """One line for a person: `deny by rule no-recursive-delete: rm -rf / (...)`."""
        by = {
            Basis.DEFAULT: "no rule matched",
            Basis.UNPARSABLE: "the line cannot be parsed",
            Basis.OPAQUE: "the program is unknown until it runs",
        }.get(self.basis, "")
        text = f"{self.action.value} by rule {self.rule}" if self.rule else self.action.value
        if by and not self.rule:
            text += f" ({by})"
        if self.command:
            text += f": {self.command}"
        if self.message:
            text += f" ({self.message})"
        return text


# ---------------------------------------------------------------------------------------------
# Glob matching with unknown pieces


class Match(enum.Enum):
    NEVER = "never"
    SOMETIMES = "sometimes"  # for some values of the unknown pieces
    ALWAYS = "always"  # whatever the unknown pieces turn out to be


@dataclass(frozen=True, slots=True)
class _CharClass:
    chars: frozenset[str]
    ranges: tuple[tuple[str, str], ...]
    negated: bool

    def contains(self, char: str) -> bool:
        inside = char in self.chars or any(low <= char <= high for low, high in self.ranges)
        return inside != self.negated


class _Star(enum.Enum):
    STAR = "*"


class _AnyChar(enum.Enum):
    ONE = "?"


_Token = str | _CharClass | _Star | _AnyChar
MAX_CONFIGURATIONS = 512
MAX_CACHED_STATE_SETS = 4096


@dataclass(frozen=True, slots=True)
class Glob:
    """A shell-style glob (`*`, `?`, `[...]`, `\\x` escapes) matched against a whole text
    whose pieces may be UNKNOWN. Runs of blanks in the pattern count as one space."""

    pattern: str
    tokens: tuple[_Token, ...]
    alphabet: frozenset[str]  # one character per class of characters the pattern tells apart
    prefix: str  # the literal text every match starts with: most subjects fail on it at once
    # What any string can lead to from one set of states: computed once per set, so a line
    # full of `$X` words costs no more than a line with one.
    _reachable: dict[frozenset[int], frozenset[frozenset[int]] | None] = field(
        default_factory=dict, compare=False, hash=False, repr=False
    )

    @staticmethod
    def compile(pattern: str, *, exact: bool = False) -> Glob:
        """`exact` keeps blanks as written (paths), instead of one space per run (commands)."""
        normalised = pattern if exact else " ".join(pattern.split())
        tokens = _glob_tokens(normalised)
        alphabet: set[str] = set()
        for token in tokens:
            if isinstance(token, str):
                alphabet.add(token)
            elif isinstance(token, _CharClass):
                alphabet.update(token.chars)
                for low, high in token.ranges:
                    alphabet.update((low, high))
        alphabet.add(_fresh_char(tokens))
        prefix = ""
        for token in tokens:
            if not isinstance(token, str):
                break
            prefix += token
        return Glob(normalised, tokens, frozenset(alphabet), prefix)

    def match(self, subject: Sequence[Piece]) -> Match:
        """Run the pattern's automaton over the subject. An UNKNOWN piece may be any string,
        so it turns one set of states into the sets reachable by every string; the answer is
        ALWAYS if every such set accepts, SOMETIMES if some do."""
        head = subject[0] if subject and isinstance(subject[0], str) else ""
        overlap = min(len(head), len(self.prefix))
        if head[:overlap] != self.prefix[:overlap]:
            return Match.NEVER
        configurations: set[frozenset[int]] = {self._closure({0})}
        for piece in subject:
            if isinstance(piece, str):
                configurations = {self._step_text(states, piece) for states in configurations}
            else:
                reachable = self._any_string(configurations)
                if reachable is None:
                    return Match.SOMETIMES
                configurations = reachable
        end = len(self.tokens)
        accepting = [end in states for states in configurations]
        if all(accepting):
            return Match.ALWAYS
        return Match.SOMETIMES if any(accepting) else Match.NEVER

    def _closure(self, states: Iterable[int]) -> frozenset[int]:
        result = set(states)
        pending = list(result)
        while pending:
            state = pending.pop()
            if state < len(self.tokens) and self.tokens[state] is _Star.STAR:
                following = state + 1
                if following not in result:
                    result.add(following)
                    pending.append(following)
        return frozenset(result)

    def _step(self, states: frozenset[int], char: str) -> frozenset[int]:
        following: set[int] = set()
        for state in states:
            if state >= len(self.tokens):
                continue
            token = self.tokens[state]
            if token is _Star.STAR:
                following.add(state)
            elif (
                token is _AnyChar.ONE
                or (isinstance(token, str) and token == char)
                or (isinstance(token, _CharClass) and token.contains(char))
            ):
                following.add(state + 1)
        return self._closure(following)

    def _step_text(self, states: frozenset[int], text: str) -> frozenset[int]:
        for char in text:
            if not states:
                break
            states = self._step(states, char)
        return states

    def _any_string(self, start: set[frozenset[int]]) -> set[frozenset[int]] | None:
        result: set[frozenset[int]] = set()
        for states in start:
            reachable = self._reachable_from(states)
            if reachable is None:
                return None
            result.update(reachable)
            if len(result) > MAX_CONFIGURATIONS:
                return None
        return result

    def _reachable_from(self, states: frozenset[int]) -> frozenset[frozenset[int]] | None:
        if states in self._reachable:
            return self._reachable[states]
        seen = {states}
        pending = [states]
        complete = True
        while pending and complete:
            current = pending.pop()
            for char in self.alphabet:
                following = self._step(current, char)
                if following not in seen:
                    seen.add(following)
                    pending.append(following)
            complete = len(seen) <= MAX_CONFIGURATIONS
        result = frozenset(seen) if complete else None
        if len(self._reachable) < MAX_CACHED_STATE_SETS:
            self._reachable[states] = result
        return result


def _glob_tokens(pattern: str) -> tuple[_Token, ...]:
    tokens: list[_Token] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\" and index + 1 < len(pattern):
            tokens.append(pattern[index + 1])
            index += 2
        elif char == "*":
            if not tokens or tokens[-1] is not _Star.STAR:
                tokens.append(_Star.STAR)
            index += 1
        elif char == "?":
            tokens.append(_AnyChar.ONE)
            index += 1
        elif char == "[":
            parsed = _char_class(pattern, index)
            if parsed is None:
                tokens.append("[")
                index += 1
            else:
                token, index = parsed
                tokens.append(token)
        else:
            tokens.append(char)
            index += 1
    return tuple(tokens)


def _char_class(pattern: str, start: int) -> tuple[_CharClass, int] | None:
    index = start + 1
    negated = index < len(pattern) and pattern[index] in "!^"
    if negated:
        index += 1
    chars: set[str] = set()
    ranges: list[tuple[str, str]] = []
    first = True
    while index < len(pattern):
        char = pattern[index]
        if char == "]" and not first:
            return _CharClass(frozenset(chars), tuple(ranges), negated), index + 1
        if index + 2 < len(pattern) and pattern[index + 1] == "-" and pattern[index + 2] != "]":
            ranges.append((char, pattern[index + 2]))
            index += 3
        else:
            chars.add(char)
            index += 1
        first = False
    return None


def _fresh_char(tokens: Sequence[_Token]) -> str:
    """A character no literal or class of the pattern names: it stands for all the others."""

    def named(candidate: str) -> bool:
        return any(
            (isinstance(token, str) and token == candidate)
            or (isinstance(token, _CharClass) and token.contains(candidate) != token.negated)
            for token in tokens
        )

    return next(c for c in ("\x00", "\x01", "\x02", "\ufffd", "\U0010fffd") if not named(c))


# ---------------------------------------------------------------------------------------------
# Rules


@dataclass(frozen=True, slots=True)
class Rule:
    """One `[[rules]]` entry. Empty who/where lists mean everyone/everywhere; a rule without
    `shell`, `exec` or `sql` matches every request of those callers on those targets."""

    index: int
    name: str
    action: Action
    message: str = ""
    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    service_accounts: tuple[str, ...] = ()
    callers: tuple[str, ...] = ()  # `agent:*`, `group:dev`, ... (Caller.matches)
    targets: tuple[str, ...] = ()
    shell: tuple[Glob, ...] = ()
    shell_options: tuple[OptionsPattern, ...] = ()  # deny and review: any option spelling
    exec: tuple[Glob, ...] = ()
    sql: frozenset[str] = frozenset()
    tables: tuple[str, ...] = ()  # SQL only: globs over the tables a statement names
    review: Review | None = None
    files: tuple[Glob, ...] = ()  # file operations only: globs over the path
    operations: frozenset[str] = frozenset()  # which file operations `files` is about

    @property
    def catch_all(self) -> bool:
        return not (self.shell or self.exec or self.sql or self.tables or self.files)

    def applies_to(self, caller: Caller, target: str) -> bool:
        return self._who(caller) and (
            not self.targets or any(fnmatchcase(target, pattern) for pattern in self.targets)
        )

    def _who(self, caller: Caller) -> bool:
        if not (self.users or self.groups or self.service_accounts or self.callers):
            return True
        if _listed(caller.name, self.users):
            return True
        if any(caller.matches(selector) for selector in self.callers):
            return True
        if caller.service_account and _listed(caller.name, self.service_accounts):
            return True
        return any(_listed(group, self.groups) for group in caller.groups)


def _same_name(one: str, other: str) -> bool:
    return fold_name(one) == fold_name(other)


def _listed_glob(names: Iterable[str], pattern: str) -> bool:
    """Whether any of `names` matches a `callers` pattern (`*` globs; any spelling)."""
    folded = fold_name(pattern)
    return any(fnmatchcase(fold_name(name), folded) for name in names)


CALLER_KINDS = ("agent", "person", "user", "group", "owner")


def _listed(name: str, names: Sequence[str]) -> bool:
    """Whether a rule's list names this user or group, in any spelling of it (`Carol` in a
    rule is the directory's `carol`): people are compared the way they log in."""
    if "*" in names or name in names:
        return True
    folded = fold_name(name)
    return any(fold_name(listed) == folded for listed in names)


@dataclass(frozen=True, slots=True)
class Policy:
    """The rules in order, and what happens when none matches or a line cannot be read."""

    rules: tuple[Rule, ...] = ()
    default: Action = Action.ALLOW
    unparsable: Action = Action.REVIEW
    review: Review = Review((), 1, 600)  # for holds that no rule asked for
    agent_writes: Action = Action.REVIEW  # what an agent's allowed write becomes
    # after a caller's token expires: "end" the session (proxy/oidc/expiry.py), or judge each
    # command at least "review" (held) or "deny"
    on_expiry: str = "end"

    def rule(self, name: str) -> Rule | None:
        return next((rule for rule in self.rules if rule.name == name), None)


_RULE_KEYS = frozenset(
    {
        "name",
        "users",
        "groups",
        "service_accounts",
        "callers",
        "targets",
        "shell",
        "exec",
        "sql",
        "tables",
        "files",
        "operations",
        "action",
        "message",
        "approvers",
        "approvals",
        "timeout",
    }
)
_POLICY_KEYS = frozenset(
    {
        "default",
        "unparsable",
        "approvers",
        "approvals",
        "timeout",
        "max_grant",
        "agent_writes",
        "on_expiry",
    }
)  # max_grant: the broker's
_TIMEOUT_PART = re.compile(r"(\d+)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_timeout(value: object) -> int:
    """Seconds from `"10m"`, `"1h30m"`, `"45s"`, `"2d"` or a bare integer of seconds."""
    if isinstance(value, bool):
        raise ValueError('must be a duration such as "10m", "1h30m" or 600 (seconds)')
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str) and value.strip():
        text = value.strip().replace(" ", "")
        if text.isdigit():
            seconds = int(text)
        else:
            parts = _TIMEOUT_PART.findall(text)
            if "".join(number + unit for number, unit in parts) != text:
                raise ValueError(
                    f'{value!r} is not a duration: use digits with s, m, h or d, e.g. "10m"'
                )
            seconds = sum(int(number) * _UNIT_SECONDS[unit] for number, unit in parts)
    else:
        raise ValueError('must be a duration such as "10m", "1h30m" or 600 (seconds)')
    if seconds <= 0:
        raise ValueError("must be longer than zero")
    if seconds > MAX_REVIEW_TIMEOUT_SECONDS:
        raise ValueError("must be at most 7 days (7d)")
    return seconds


ON_EXPIRY = ("end", "review", "deny")


def parse_policy(raw: Mapping[str, Any], path: Path | str) -> Policy:
    """The `[policy]` table and `[[rules]]` of a parsed config file, validated whole."""
    section = raw.get("policy", {})
    if not isinstance(section, dict):
        raise ConfigError(path, "policy", "must be a table ([policy])")
    for key in section:
        if key not in _POLICY_KEYS:
            raise ConfigError(path, f"policy.{key}", f"unknown key (known: {_known(_POLICY_KEYS)})")
    default = _action(section.get("default", "allow"), path, "policy.default")
    unparsable = _action(section.get("unparsable", "review"), path, "policy.unparsable")
    if unparsable is Action.ALLOW:
        raise ConfigError(
            path,
            "policy.unparsable",
            'must be "review" or "deny": lines the gateway cannot read are never allowed unseen',
        )
    review = _review(section, path, "policy", approvers_required=False)
    assert review is not None
    rules = parse_rules(raw.get("rules", []), path)
    agent_writes = _action(section.get("agent_writes", "review"), path, "policy.agent_writes")
    on_expiry = section.get("on_expiry", "end")
    if on_expiry not in ON_EXPIRY:
        raise ConfigError(path, "policy.on_expiry", 'must be "end", "review" or "deny"')
    return Policy(rules, default, unparsable, review, agent_writes, on_expiry)


def parse_rules(raw_rules: object, path: Path | str) -> tuple[Rule, ...]:
    """`[[rules]]` as tomllib gives it (a list of tables) -> rules, in order."""
    return tuple(
        parse_named_entries(
            raw_rules,
            path,
            "rules",
            _parse_rule,
            " because verdicts and the audit log refer to them",
        )
    )


def _parse_rule(entry: object, index: int, path: Path | str) -> Rule:
    if not isinstance(entry, dict):
        raise ConfigError(path, f"rules #{index}", "must be a table ([[rules]])")
    raw_name = entry.get("name", f"rule-{index}")
    if not isinstance(raw_name, str) or not raw_name.strip():
        raise ConfigError(path, _rule_key(index, None, "name"), "must be a non-empty string")
    name = raw_name.strip()

    def key(field: str) -> str:
        return _rule_key(index, name, field)

    for given in entry:
        if given not in _RULE_KEYS:
            raise ConfigError(path, key(given), f"unknown key (known: {_known(_RULE_KEYS)})")
    action, message, review = _rule_action(entry, path, index, name)
    shell_patterns = _patterns(entry, "shell", path, key("shell"))
    return Rule(
        index=index,
        name=name,
        action=action,
        message=message,
        users=_strings(entry, "users", path, key("users")),
        groups=_strings(entry, "groups", path, key("groups")),
        service_accounts=_strings(entry, "service_accounts", path, key("service_accounts")),
        callers=_callers(entry, path, key("callers")),
        targets=_strings(entry, "targets", path, key("targets")),
        shell=tuple(Glob.compile(p) for p in shell_patterns),
        shell_options=tuple(
            form
            for form in (OptionsPattern.compile(p) for p in shell_patterns)
            if form is not None and action is not Action.ALLOW
        ),
        exec=tuple(Glob.compile(p) for p in _patterns(entry, "exec", path, key("exec"))),
        review=review,
        **_rule_scope(entry, path, key, bool(shell_patterns)),
    )


def _rule_action(
    entry: dict[str, Any], path: Path | str, index: int, name: str
) -> tuple[Action, str, Review | None]:
    """A rule's action, message, and (for review) who approves within what time."""

    def key(field: str) -> str:
        return _rule_key(index, name, field)

    if "action" not in entry:
        raise ConfigError(path, key("action"), 'missing: say "allow", "deny" or "review"')
    action = _action(entry["action"], path, key("action"))
    message = entry.get("message", "")
    if not isinstance(message, str):
        raise ConfigError(path, key("message"), "must be a string")
    if action is not Action.REVIEW:
        for field in ("approvers", "approvals", "timeout"):
            if field in entry:
                raise ConfigError(path, key(field), 'only means something with action = "review"')
        return action, message.strip(), None
    review = _review(entry, path, f"rules #{index} ({name})", approvers_required=True)
    return action, message.strip(), review


def _rule_scope(
    entry: dict[str, Any], path: Path | str, key: Callable[[str], str], shell: bool
) -> dict[str, Any]:
    """A rule's SQL classes and tables, or its file globs and operations, checked together."""
    sql = _strings(entry, "sql", path, key("sql"))
    for class_name in sql:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", class_name):
            raise ConfigError(
                path, key("sql"), f"{class_name!r} is not a statement class name (lower_snake)"
            )
    tables = tuple(t.lower() for t in _strings(entry, "tables", path, key("tables")))
    if tables and (shell or entry.get("exec")):
        raise ConfigError(
            path, key("tables"), "limits SQL statements: it cannot go with shell or exec"
        )
    files = _patterns(entry, "files", path, key("files"))
    operations = _strings(entry, "operations", path, key("operations"))
    if files and (shell or entry.get("exec") or sql or tables):
        raise ConfigError(
            path,
            key("files"),
            "limits file operations: it cannot go with shell, exec, sql or tables",
        )
    if operations and not files:
        raise ConfigError(path, key("operations"), 'goes with files, e.g. files = ["/etc/*"]')
    for operation in operations:
        if operation not in FILE_OPERATIONS:
            raise ConfigError(
                path,
                key("operations"),
                f"{operation!r} is not a file operation (known: {_known(FILE_OPERATIONS)})",
            )
    return {
        "sql": frozenset(sql),
        "tables": tables,
        "files": tuple(Glob.compile(p, exact=True) for p in files),
        "operations": frozenset(operations or FILE_OPERATIONS) if files else frozenset(),
    }


_PATTERN_SHORT_OPTIONS = re.compile(r"-[A-Za-z0-9]+")
_PATTERN_LONG_OPTION = re.compile(r"--[A-Za-z0-9][A-Za-z0-9_-]*(=[^*?\[\]\\]*)?")


@dataclass(frozen=True, slots=True)
class OptionsPattern:
    """A restricting pattern read the way GNU getopt reads a command: it requires at least
    its short option letters, in any spelling and position, and matches the rest (program,
    sorted long options, operands in order) as a glob. So `rm -rf *` also meets `rm -r -f /`,
    `rm -fr /`, `rm -rfv /` and `rm / -rf`."""

    letters: frozenset[str]
    rest: Glob

    @staticmethod
    def compile(pattern: str) -> OptionsPattern | None:
        words = pattern.split()
        letters: set[str] = set()
        long_options: list[str] = []
        operands: list[str] = []
        ended = False
        for word in words[1:]:
            if ended:
                operands.append(word)
            elif word == "--":
                ended = True
            elif _PATTERN_SHORT_OPTIONS.fullmatch(word):
                letters.update(word[1:])
            elif _PATTERN_LONG_OPTION.fullmatch(word):
                long_options.append(word)
            else:
                operands.append(word)
        if not words or not letters:
            return None
        rest = " ".join([words[0], *sorted(long_options), *operands])
        return OptionsPattern(frozenset(letters), Glob.compile(rest))

    def match(self, command: OptionsFirst) -> Match:
        if not self.letters <= command.letters:
            return Match.NEVER
        return self.rest.match(command.rest)


def _rule_key(index: int, name: str | None, field: str) -> str:
    return entry_key("rules", index, name, field)


def _known(keys: Collection[str]) -> str:
    return ", ".join(sorted(keys))


def _action(value: object, path: Path | str, key: str) -> Action:
    try:
        return Action(value)
    except ValueError:
        raise ConfigError(
            path, key, f'{value!r} is not an action: say "allow", "deny" or "review"'
        ) from None


def _review(
    table: Mapping[str, Any], path: Path | str, prefix: str, *, approvers_required: bool
) -> Review:
    approvers = _strings(table, "approvers", path, f"{prefix}.approvers")
    if approvers_required and not approvers:
        raise ConfigError(
            path, f"{prefix}.approvers", 'a review needs approver groups, e.g. ["oncall"]'
        )
    approvals = table.get("approvals", 1)
    if isinstance(approvals, bool) or not isinstance(approvals, int) or approvals < 1:
        raise ConfigError(path, f"{prefix}.approvals", "must be a whole number, 1 or more")
    if approvals > 16:
        raise ConfigError(path, f"{prefix}.approvals", "must be at most 16")
    try:
        timeout = parse_timeout(table.get("timeout", DEFAULT_REVIEW_TIMEOUT))
    except ValueError as exc:
        raise ConfigError(path, f"{prefix}.timeout", str(exc)) from None
    return Review(approvers, approvals, timeout)


def _strings(table: Mapping[str, Any], field: str, path: Path | str, key: str) -> tuple[str, ...]:
    value = table.get(field, [])
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise ConfigError(path, key, 'must be a list of non-empty strings, e.g. ["dev"]')
    return tuple(value)


def _callers(table: Mapping[str, Any], path: Path | str, key: str) -> tuple[str, ...]:
    found = _strings(table, "callers", path, key)
    for selector in found:
        prefix, colon, pattern = selector.partition(":")
        if not colon or prefix not in CALLER_KINDS or not pattern:
            raise ConfigError(
                path,
                key,
                f"{selector!r} is not a caller: say agent:NAME, person:NAME, user:NAME, "
                "group:NAME or owner:NAME (NAME may be *)",
            )
    return found


def _patterns(table: Mapping[str, Any], field: str, path: Path | str, key: str) -> tuple[str, ...]:
    value = table.get(field, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(
        isinstance(item, str) and item.strip() for item in value
    ):
        raise ConfigError(path, key, 'must be a glob string, or a list of them, e.g. "rm -rf *"')
    return tuple(value)


# ---------------------------------------------------------------------------------------------
# Deciding


def decide_shell(policy: Policy, caller: Caller, target: str, line: LineResult | str) -> Verdict:
    """The verdict for one line typed into a shell: the most severe verdict of its simple
    commands (the first of equals), each decided by the first rule that matches it."""
    result = analyse_line(line) if isinstance(line, str) else line
    if isinstance(result, Unparsable):
        return _after_expiry(policy, caller, _unparsable(policy, result))
    verdict = (
        _worst(_decide_command(policy, caller, target, command) for command in result.commands)
        or _NOTHING_RUNS
    )
    return verdict if verdict is _NOTHING_RUNS else _after_expiry(policy, caller, verdict)


def decide_paste(
    policy: Policy, caller: Caller, target: str, lines: Sequence[LineResult]
) -> Verdict:
    """A multi-line paste (from `shell.analyse_paste`): the most severe verdict of its lines."""
    return _worst(decide_shell(policy, caller, target, line) for line in lines) or _NOTHING_RUNS


def decide_command_line(
    policy: Policy, caller: Caller, target: str, line: CommandLine
) -> Verdict | None:
    """The verdict for a line read off the screen by the line detector, or None when there
    is nothing to inspect: a full-screen program is active, or a secret was typed at what
    looks like a password prompt. A line the screen cannot vouch for is unparsable."""
    if line.full_screen:
        return None
    if not line.echoed and line.password_prompt:
        return None
    if not line.certain:
        return _unparsable_message(policy, line.text or None, line.reason)
    if "\n" in line.text:
        return decide_paste(policy, caller, target, analyse_paste(line.text))
    return decide_shell(policy, caller, target, line.text)


def decide_exec(
    policy: Policy, caller: Caller, target: str, command: str, *, terminal: bool = False
) -> Verdict:
    """An SSH exec request, inspected in full: the whole string against `exec` patterns, and
    every simple command in it against `shell` patterns and catch-all rules; most severe wins.

    Without a `terminal` the command's input is the caller's channel, which nothing judges: a
    shell reading its commands from it (`ssh host bash < script`) is opaque. With one, the
    lines typed into it are judged at Enter by the shell gate."""
    whole: Verdict | None = None
    for rule in policy.rules:
        if not rule.exec or not rule.applies_to(caller, target):
            continue
        verdict = _rule_verdict(policy, rule, [g.match((command,)) for g in rule.exec], command)
        if verdict is not None:
            whole = verdict
            break
    result = analyse_line(command, interactive=False, input_unseen=not terminal)
    if isinstance(result, Unparsable):
        parts: Verdict | None = _unparsable(policy, result)
    else:
        parts = _worst(
            _decide_command(policy, caller, target, simple) for simple in result.commands
        )
    verdict = _worst(v for v in (whole, parts) if v is not None) or _default(policy)
    return _after_expiry(policy, caller, verdict, command)


def decide_unseen(policy: Policy, caller: Caller, target: str, what: str, why: str) -> Verdict:
    """Commands the gateway cannot see at all, such as a shell without a terminal reading them
    from the channel: never allowed. The first catch-all rule of this caller that denies or
    holds decides (allow rules cannot vouch for what nobody can read), else `unparsable`."""
    for rule in policy.rules:
        if rule.catch_all and rule.action is not Action.ALLOW and rule.applies_to(caller, target):
            return _after_expiry(policy, caller, _from_rule(rule, what, Basis.OPAQUE))
    return _after_expiry(policy, caller, _unparsable_message(policy, what, why, Basis.OPAQUE))


def decide_sql(
    policy: Policy,
    caller: Caller,
    target: str,
    classes: Collection[str],
    statement: str = "",
    tables: Collection[str] = (),
) -> Verdict:
    """One SQL statement, by `_decide_sql_rules`; an agent's write that would be allowed gets
    `[policy] agent_writes` instead (held for review unless the policy says otherwise)."""
    verdict = _decide_sql_rules(policy, caller, target, classes, statement, tables)
    if caller.agent and AGENT_WRITE_CLASSES.intersection(classes):
        verdict = _agent_write(policy, verdict, statement or None)
    return _after_expiry(policy, caller, verdict, statement or None)


# SQL classes that change data, schema or rights, or may (a DO block, dynamic SQL, a call).
AGENT_WRITE_CLASSES = frozenset(
    {
        "write",
        "delete_without_where",
        "update_without_where",
        "ddl",
        "truncate",
        "dcl",
        "copy_in",
        "copy_file",
        "copy_program",
        "read_write",
        "table_rewrite",
        "do_block",
        "dynamic_sql",
        "set_role",
        # lo_import writes a large object, lo_export a server file, pg_terminate_backend ends
        # someone's session: acting on the server is no read
        "server_function",
        "server_file",
        # a function or procedure not known to only read may write (`select my_func()`,
        # `call proc()`), and nextval, setval or lo_create do: the gate cannot see inside
        "calls_code",
        "side_effect",
    }
)
AGENT_WRITE_OPERATIONS = frozenset({"write", "delete", "rename", "mkdir", "chmod", "symlink"})


def _after_expiry(
    policy: Policy, caller: Caller, verdict: Verdict, what: str | None = None
) -> Verdict:
    """After the caller's token has expired, with `[policy] on_expiry = "review"` or "deny",
    nothing they ask for is less strict than that (with "end", the session is over by then).
    The one place policy reads the clock: a caller carries when its sign-in ends."""
    if policy.on_expiry == "end" or caller.expires_at is None or time.time() <= caller.expires_at:
        return verdict
    action = Action(policy.on_expiry)
    if verdict.action.severity >= action.severity:
        return verdict
    command = verdict.command or what
    if action is Action.DENY:
        return Verdict(action, Basis.DEFAULT, "denied: your sign-in has expired", None, command)
    message = "needs review: your sign-in has expired ([policy] on_expiry)"
    return Verdict(action, Basis.DEFAULT, message, None, command, policy.review)


def _agent_write(policy: Policy, verdict: Verdict, what: str | None) -> Verdict:
    """An agent's write: never less strict than `[policy] agent_writes`."""
    if verdict.action.severity >= policy.agent_writes.severity:
        return verdict
    if policy.agent_writes is Action.DENY:
        return Verdict(Action.DENY, Basis.DEFAULT, "denied: agents may not write here", None, what)
    message = "needs review: an agent's writes are held ([policy] agent_writes)"
    return Verdict(Action.REVIEW, Basis.DEFAULT, message, None, what, policy.review)


def _decide_sql_rules(
    policy: Policy,
    caller: Caller,
    target: str,
    classes: Collection[str],
    statement: str = "",
    tables: Collection[str] = (),
) -> Verdict:
    """One SQL statement, given its classes and the tables it names (the PostgreSQL layer
    classifies): the first rule whose `sql` classes intersect them and whose `tables` match
    (see `_tables_match`), or a catch-all rule, decides."""
    for rule in policy.rules:
        if not rule.applies_to(caller, target) or rule.shell or rule.exec or rule.files:
            continue
        if rule.sql and not rule.sql.intersection(classes):
            continue
        if rule.tables and not _tables_match(rule, tables):
            continue
        return _from_rule(rule, statement or None, Basis.RULE)
    if "unparsable" in classes:
        return _unparsable_message(policy, statement or None, "the SQL parser rejected it")
    return _default(policy)


FILE_OPERATIONS = frozenset(
    {"read", "write", "delete", "rename", "list", "mkdir", "chmod", "symlink"}
)
# What a shell redirect does to its file (proxy.shell's redirect operations).
REDIRECT_OPERATIONS: dict[str, tuple[str, ...]] = {
    "read": ("read",),
    "write": ("write",),
    "append": ("write",),
    "readwrite": ("read", "write"),
}


def file_path(path: str | Sequence[Piece], cwd: str | None = None) -> tuple[Piece, ...]:
    """The pieces a `files` glob is matched against: the path normalised lexically (`//`, `.`,
    `..`), made absolute with `cwd` when it is known; otherwise a relative path (or `~`) starts
    with an UNKNOWN directory. Unknown pieces from the shell stay unknown, and a `..` after one
    makes the whole path unknown: it could climb anywhere."""
    pieces: tuple[Piece, ...] = (path,) if isinstance(path, str) else tuple(path)
    if not pieces:
        return (UNKNOWN,)
    if UNKNOWN in pieces:
        literal = "".join(p for p in pieces if isinstance(p, str))
        if "/.." in "/" + literal or "~" in literal[:1]:
            return (UNKNOWN,)
        head = pieces[0]
        merged: list[Piece] = [] if isinstance(head, str) and head.startswith("/") else [UNKNOWN]
        if merged and isinstance(head, str):
            merged.append("/")
        for piece in pieces:
            merged.append(re.sub("/+", "/", piece) if isinstance(piece, str) else piece)
        return tuple(merged)
    text = "".join(p for p in pieces if isinstance(p, str))
    if text.startswith("~"):
        return (UNKNOWN,)
    if not text.startswith("/") and cwd is not None and cwd.startswith("/"):
        text = cwd.rstrip("/") + "/" + text
    if text.startswith("/"):
        return ("/" + posixpath.normpath(text).lstrip("/"),)
    relative = posixpath.normpath(text)
    while relative == ".." or relative.startswith("../"):
        relative = relative[3:]
    return (UNKNOWN, "/" + relative if relative not in ("", ".") else "/")


def _path_text(path: Sequence[Piece]) -> str:
    return "".join(piece if isinstance(piece, str) else "*" for piece in path)


def decide_file(
    policy: Policy,
    caller: Caller,
    target: str,
    operation: str,
    path: Sequence[Piece],
    *,
    what: str = "",
) -> Verdict:
    """A file operation asked for by itself (an SFTP request, an scp transfer): the first
    rule with `files` whose operations include it and whose globs match the path (from
    `file_path`), or a catch-all rule, decides; else the default. `what` names the request
    for messages and the queue (e.g. `sftp read /etc/passwd`)."""
    verdict = _file_rules(policy, caller, target, operation, path, what, catch_all=True)
    verdict = verdict or _default(policy)
    described = what or f"{operation} {_path_text(path)}"
    if caller.agent and operation in AGENT_WRITE_OPERATIONS:
        verdict = _agent_write(policy, verdict, described)
    return _after_expiry(policy, caller, verdict, described)


def decide_files(
    policy: Policy,
    caller: Caller,
    target: str,
    operations: Sequence[tuple[str, str]],
    *,
    cwd: str | None = None,
    via: str = "sftp",
) -> Verdict:
    """One request that does several things (a rename: both paths; an open for reading and
    writing): the most severe verdict of its (operation, path) pairs, each by `decide_file`."""
    verdicts = (
        decide_file(
            policy, caller, target, op, file_path(path, cwd), what=f"{via} {op} {path}".strip()
        )
        for op, path in operations
    )
    return _worst(verdicts) or _default(policy)


def _file_rules(
    policy: Policy,
    caller: Caller,
    target: str,
    operation: str,
    path: Sequence[Piece],
    what: str,
    *,
    catch_all: bool,
) -> Verdict | None:
    described = what or f"{operation} {_path_text(path)}"
    for rule in policy.rules:
        if not rule.applies_to(caller, target):
            continue
        if rule.files:
            if operation not in rule.operations:
                continue
            matches = [glob.match(path) for glob in rule.files]
            verdict = _rule_verdict(policy, rule, matches, described)
            if verdict is not None:
                return verdict
        elif catch_all and rule.catch_all:
            return _from_rule(rule, described, Basis.RULE)
    return None


def _decide_redirects(
    policy: Policy, caller: Caller, target: str, command: SimpleCommand
) -> Iterable[Verdict]:
    """Each file a command opens through a redirect (or copies as an scp server), against the
    rules with `files` only: the command's own verdict covers the rest, so no default or
    catch-all applies twice."""
    opened = [
        (operation, redirect.target)
        for redirect in command.redirects
        for operation in REDIRECT_OPERATIONS[redirect.operation]
    ]
    for operation, word in opened + _scp_transfer(command):
        what = f"{command.text}: {operation} {word.text}"
        path = file_path(word.pieces)
        verdict = _file_rules(policy, caller, target, operation, path, what, catch_all=False)
        if verdict is not None and verdict.action is not Action.ALLOW:
            yield verdict


def _scp_transfer(command: SimpleCommand) -> list[tuple[str, Word]]:
    """The files a legacy scp server (`scp -t DEST`, `scp -f SOURCE...`, which `scp -O` asks
    the target to run) writes or reads: DEST and anything under it (the file names come later,
    in the stream), SOURCE and with -r anything under it."""
    if command.program != "scp":
        return []
    letters: set[str] = set()
    paths: list[Word] = []
    ended = False
    for word in command.argv[1:]:
        if not ended and word.text == "--":
            ended = True
        elif not ended and word.text.startswith("-") and word.known:
            letters.update(word.text[1:])
        else:
            paths.append(word)
    if "t" in letters:
        operation = "write"
    elif "f" in letters:
        operation = "read"
    else:
        return []
    found = [(operation, path) for path in paths]
    # A sink writes into DEST when it is a directory, under a name the stream gives: `-t`
    # always may write anything under DEST. A source reads under SOURCE with -r.
    if operation == "write" or "r" in letters:
        found += [
            (operation, Word(f"{path.text}/*", (*path.pieces, "/", UNKNOWN))) for path in paths
        ]
    return found


def _tables_match(rule: Rule, tables: Collection[str]) -> bool:
    """Whether a rule's `tables` globs match a statement's tables (case-insensitive). A deny
    or review rule matches when any table matches; an allow rule only when every table does
    (an allow for `scratch.*` must not allow `insert into payments select from scratch.t`).
    A pattern without a schema matches the table name in any schema. A table written without
    a schema may be in any schema of the search_path: it meets `public.users` for a deny or
    review rule, never for an allow rule."""
    restricting = rule.action is not Action.ALLOW

    def one(table: str) -> bool:
        table = table.lower()
        schema, _, name = table.rpartition(".")
        for pattern in rule.tables:
            if "." not in pattern:
                if fnmatchcase(name, pattern):
                    return True
            elif schema:
                if fnmatchcase(table, pattern):
                    return True
            elif restricting and fnmatchcase(name, pattern.rpartition(".")[2]):
                return True
        return False

    if restricting:
        return any(one(table) for table in tables)
    return bool(tables) and all(one(table) for table in tables)


def _decide_command(policy: Policy, caller: Caller, target: str, command: SimpleCommand) -> Verdict:
    """The program's verdict, unless a file rule about a file it opens through a redirect, or
    copies as a legacy scp transfer, is more severe."""
    files = _worst(_decide_redirects(policy, caller, target, command))
    verdict = _decide_program(policy, caller, target, command)
    if files is not None and files.action.severity > verdict.action.severity:
        verdict = files
    if caller.agent and _writes_files(command):
        return _agent_write(policy, verdict, command.text)
    if caller.agent and not _reads_only(command) and not _named_by_rule(policy, verdict):
        return _agent_write(policy, verdict, command.text)
    return verdict


# Programs that only read or print (with the arguments `_reads_only` checks): an agent runs
# them as a person would. Any other program may write (rm, cp, sed -i, tee, an interpreter, a
# deploy script), so an agent's is held like its redirects (`[policy] agent_writes`) unless a
# rule names it (a `shell` pattern, not a catch-all).
READ_ONLY_PROGRAMS = frozenset(
    {
        ":",
        "[",
        "base64",
        "basename",
        "cat",
        "cd",
        "cmp",
        "column",
        "cut",
        "df",
        "diff",
        "dirname",
        "du",
        "echo",
        "egrep",
        "false",
        "fgrep",
        "file",
        "free",
        "grep",
        "head",
        "id",
        "jq",
        "ls",
        "md5sum",
        "nproc",
        "printenv",
        "printf",
        "ps",
        "pwd",
        "readlink",
        "realpath",
        "seq",
        "sha1sum",
        "sha256sum",
        "sha512sum",
        "sleep",
        "stat",
        "tail",
        "test",
        "tr",
        "true",
        "uname",
        "uptime",
        "w",
        "wc",
        "who",
        "whoami",
    }
)


def _reads_only(command: SimpleCommand) -> bool:
    if command.opaque is not None or not command.argv:
        return False
    program, args = command.program, [word.text for word in command.argv[1:]]
    if program in READ_ONLY_PROGRAMS:
        return True
    if program in ("hostname", "env"):
        return not args  # `hostname NAME` renames the machine; `env CMD` runs CMD
    if program == "date":
        return not any(a.startswith(("-s", "--set")) for a in args)
    if program == "sort":
        return not any(a.startswith(("-o", "--output")) for a in args)
    return False


def _named_by_rule(policy: Policy, verdict: Verdict) -> bool:
    """Whether a rule with `shell` patterns (not a catch-all) decided `verdict`: the
    administrator named this program for this caller."""
    if verdict.basis is not Basis.RULE or verdict.rule is None:
        return False
    rule = next((r for r in policy.rules if r.name == verdict.rule), None)
    return rule is not None and bool(rule.shell) and not rule.catch_all


def _writes_files(command: SimpleCommand) -> bool:
    """A redirect that writes, or a legacy scp sink: an agent's shell write."""
    writes = any(r.operation in ("write", "append", "readwrite") for r in command.redirects)
    return writes or any(op == "write" for op, _ in _scp_transfer(command))


def _decide_program(policy: Policy, caller: Caller, target: str, command: SimpleCommand) -> Verdict:
    subject = command.subject()
    options_first = command.options_first()
    for rule in policy.rules:
        if rule.exec and not rule.shell:
            continue
        if (rule.sql or rule.tables or rule.files) and not rule.shell:
            continue
        if not rule.applies_to(caller, target):
            continue
        matches = [Match.ALWAYS] if rule.catch_all else [g.match(subject) for g in rule.shell]
        if options_first is not None:
            matches.extend(form.match(options_first) for form in rule.shell_options)
        if command.opaque is not None and rule.action is Action.ALLOW:
            continue  # an allow cannot vouch for a program nobody can name yet
        verdict = _rule_verdict(policy, rule, matches, command.text)
        if verdict is not None:
            if command.opaque is not None and verdict.basis is Basis.MAY_MATCH:
                return _unparsable_message(policy, command.text, command.opaque, Basis.OPAQUE)
            return verdict
    if command.opaque is not None:
        return _unparsable_message(policy, command.text, command.opaque, basis=Basis.OPAQUE)
    return _default(policy)


def _rule_verdict(
    policy: Policy, rule: Rule, matches: Sequence[Match], command: str
) -> Verdict | None:
    """The rule's verdict if it matches; a may-match of a restricting rule is uncertain."""
    if Match.ALWAYS in matches:
        return _from_rule(rule, command, Basis.RULE)
    if Match.SOMETIMES in matches and rule.action is not Action.ALLOW:
        if rule.action is Action.REVIEW:
            return _from_rule(rule, command, Basis.MAY_MATCH)
        why = f"it may match rule {rule.name}, depending on what the shell expands"
        verdict = _unparsable_message(policy, command, why, basis=Basis.MAY_MATCH)
        return Verdict(
            verdict.action, Basis.MAY_MATCH, verdict.message, rule.name, command, verdict.review
        )
    return None


def _from_rule(rule: Rule, command: str | None, basis: Basis) -> Verdict:
    if rule.action is Action.DENY:
        message = rule.message or f"denied by rule {rule.name}"
    elif rule.action is Action.REVIEW:
        assert rule.review is not None
        message = rule.message or f"needs approval from {', '.join(rule.review.approvers)}"
    else:
        message = rule.message
    if basis is Basis.MAY_MATCH:
        message += " (it may match, depending on what the shell expands)"
    return Verdict(rule.action, basis, message, rule.name, command, rule.review)


def _unparsable(policy: Policy, result: Unparsable) -> Verdict:
    return _unparsable_message(policy, result.line, result.reason)


def _unparsable_message(
    policy: Policy, command: str | None, why: str, basis: Basis = Basis.UNPARSABLE
) -> Verdict:
    action = policy.unparsable
    prefix = "denied" if action is Action.DENY else "needs review"
    review = policy.review if action is Action.REVIEW else None
    return Verdict(action, basis, f"{prefix}: {why}", None, command, review)


def _default(policy: Policy) -> Verdict:
    if policy.default is Action.ALLOW:
        return Verdict(Action.ALLOW, Basis.DEFAULT, "")
    review = policy.review if policy.default is Action.REVIEW else None
    return Verdict(policy.default, Basis.DEFAULT, "no rule allows it", None, None, review)


_NOTHING_RUNS = Verdict(Action.ALLOW, Basis.DEFAULT, "")  # an empty line or a comment


def worst_verdict(verdicts: Iterable[Verdict]) -> Verdict | None:
    """The most severe of `verdicts` (the first of equals; a deny ends the fold), or None
    when there are none. Every protocol folds the verdicts of a line's parts with it."""
    worst: Verdict | None = None
    for verdict in verdicts:
        if worst is None or verdict.action.severity > worst.action.severity:
            worst = verdict
            if worst.action is Action.DENY:
                break
    return worst


_worst = worst_verdict

# ---------------------------------------------------------------------------------------------
# Who may approve an agent's held command


def owner_refusal(
    approver: str,
    approver_groups: Collection[str],
    requester: str,
    owners: Mapping[str, str],
    *,
    owner_may_approve: bool = False,
) -> str | None:
    """Why `approver` may not decide a hold of `requester`, when the requester is an agent
    they answer for (`owners`: agent name -> its owner, a person or `group:NAME`); None when
    they may. Like a caller and their own request: the owner would approve their own agent."""
    if owner_may_approve:
        return None
    owner = next((o for name, o in owners.items() if _same_name(name, requester)), None)
    if owner is None:
        return None
    kind, _, group = owner.partition(":")
    if kind == "group" and group:
        responsible = any(_same_name(group, mine) for mine in approver_groups)
    else:
        responsible = _same_name(owner, approver)
    if not responsible:
        return None
    return (
        f"{approver} answers for agent {requester} (its owner is {owner}); another approver "
        "must decide ([oidc] owner_may_approve)"
    )


# ---------------------------------------------------------------------------------------------
# Just-in-time access


@dataclass(frozen=True, slots=True)
class ActiveGrant:
    """Time-boxed access for one user to one target. Times are seconds since the epoch."""

    id: str
    user: str
    target: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class SessionAccess:
    """Whether a session may start; `grant` is the one it relies on (the session must end
    when that grant expires or is revoked), None when the target needs no grant."""

    allowed: bool
    reason: str
    grant: GrantLike | None = None


class GrantLike(Protocol):
    """Any grant record with these fields will do (the broker's own, or `ActiveGrant`)."""

    @property
    def id(self) -> str: ...
    @property
    def user(self) -> str: ...
    @property
    def target(self) -> str: ...
    @property
    def expires_at(self) -> float: ...


def may_start_session(
    user: str, target: str, *, requires_jit: bool, grants: Iterable[GrantLike], now: float
) -> SessionAccess:
    """A JIT target needs a live grant for this user and target; the longest-lived one is
    used, so the session is not ended early when another grant would still cover it."""
    if not requires_jit:
        return SessionAccess(True, "the target does not require just-in-time access")
    live = [
        grant
        for grant in grants
        if grant.user == user and grant.target == target and grant.expires_at > now
    ]
    if not live:
        return SessionAccess(
            False,
            f"{target} requires just-in-time access and {user} has no live grant: "
            f"request one with `hoop-tui request {target} --for 1h --reason ...`",
        )
    grant = max(live, key=lambda item: item.expires_at)
    return SessionAccess(True, f"grant {grant.id} is live", grant)
