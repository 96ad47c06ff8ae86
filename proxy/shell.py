"""What a shell line would run: every simple command in it, with wrappers peeled and words unquoted.

The policy judges simple commands, not lines, because one line can hide many commands:
`a; b`, `a && b`, pipes, `$(...)`, backticks, subshells, `{ ...; }`, process substitution,
and wrappers (`sudo`, `env`, `nohup`, `nice`, `timeout`, `xargs`, `exec`, `command`,
`builtin`, `time`, `bash -c '...'`, `eval ...`, `su -c`, `find -exec`). bashlex builds the
tree; the words are unquoted here, from the line's own text, because bashlex mangles ANSI-C
quoting (`$'\\x72m'`).

Anything the shell only knows when it runs (`$X`, `${X}`, `$(...)`, globs, brace expansion,
`~`) becomes an `UNKNOWN` piece of a word. A command whose *name* holds such a piece, or an
alias defined in the same input, is *opaque*: the policy never allows it silently. A line
bashlex cannot parse is `Unparsable`, never an exception: this module never raises on text.

Nothing here does I/O; every function is pure.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import posixpath
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import bashlex
import bashlex.errors
import bashlex.subst


def _guard_bashlex() -> None:
    """bashlex 0.18 loops forever on `${` whose `}` is not in the same word as it reads it
    (`_paramexpand` takes `str.find`'s -1 as a position and starts the word over): make it
    refuse such a word instead, so a typed line can never hang the gateway."""
    original = bashlex.subst._paramexpand
    if getattr(original, "hoop_guarded", False):
        return

    def guarded(parser: Any, string: str, start: int) -> Any:
        node, end = original(parser, string, start)
        if end <= start:
            raise bashlex.errors.ParsingError("bad substitution: no closing '}'", string, start)
        return node, end

    guarded.hoop_guarded = True  # type: ignore[attr-defined]
    bashlex.subst._paramexpand = guarded


_guard_bashlex()

MAX_LINE_CHARS = 16 * 1024
MAX_CACHED_LINE_CHARS = 1024
MAX_DEPTH = 8
MAX_LOGICAL_LINE_LINES = 200


class Unknown(enum.Enum):
    """A piece of a word whose value only the running shell knows."""

    ANY = "any"


UNKNOWN = Unknown.ANY
Piece = str | Unknown


@dataclass(frozen=True, slots=True)
class Word:
    """One word after unquoting. `pieces` are literal text and UNKNOWN runs, for matching;
    `text` is what a person reads (unknown parts shown as written, e.g. `$HOME`)."""

    text: str
    pieces: tuple[Piece, ...]
    hidden: str | None = None  # set when the word hides a command we could not analyse

    @property
    def known(self) -> bool:
        return UNKNOWN not in self.pieces

    @staticmethod
    def literal(text: str) -> Word:
        return Word(text, (text,) if text else ())


RedirectOperation = Literal["read", "write", "append", "readwrite"]
_OPERATORS: dict[RedirectOperation, str] = {
    "read": "<",
    "write": ">",
    "append": ">>",
    "readwrite": "<>",
}


@dataclass(frozen=True, slots=True)
class Redirect:
    """A file a command opens through a redirect (`<`, `>`, `>|`, `>>`, `<>`, `&>`, `&>>`,
    `>&FILE`, `<&FILE`), its target after quote removal. Duplicating or closing a descriptor
    (`2>&1`, `<&3`, `3<&-`) and here-documents/strings open no file and are not listed."""

    operation: RedirectOperation
    target: Word

    @property
    def operator(self) -> str:
        """The canonical spelling rules see: `<`, `>`, `>>` or `<>`."""
        return _OPERATORS[self.operation]


@dataclass(frozen=True, slots=True)
class SimpleCommand:
    """One program invocation. `argv[0]` is the program reduced to its name (`/bin/rm` -> `rm`).

    `opaque` says why the program is unknown (then the policy treats it as unparsable);
    `via` lists the wrappers that led here, outermost first (`("sudo", "bash -c")`).
    """

    argv: tuple[Word, ...]
    opaque: str | None = None
    via: tuple[str, ...] = ()
    reads_commands: bool = False  # a shell (or `sudo -i`, `su -`) taking commands from its input
    redirects: tuple[Redirect, ...] = ()  # files it reads or writes through `<`, `>`, ...
    located: bool = True  # found the usual way: a bare name, or a path in a system directory

    @property
    def program(self) -> str:
        return self.argv[0].text if self.argv else ""

    @property
    def text(self) -> str:
        words = [word.text for word in self.argv]
        words += [f"{r.operator} {r.target.text}" for r in self.redirects]
        return " ".join(words)

    def subject(self) -> tuple[Piece, ...]:
        """The pieces a `shell` glob is matched against: words joined by one space, then each
        redirect as `OP TARGET` (OP one of `<`, `>`, `>>`, `<>`, however it was spelt), so
        `shell = "*canary*"` also meets `cat < x-canary` and `: > x-canary`. An opaque
        program name counts as UNKNOWN, since it could be any program."""
        pieces: list[Piece] = []
        for index, word in enumerate(self.argv):
            if index:
                pieces.append(" ")
            if index == 0 and self.opaque is not None:
                pieces.append(UNKNOWN)
            else:
                pieces.extend(word.pieces)
        for redirect in self.redirects:
            pieces.append(f" {redirect.operator} " if pieces else f"{redirect.operator} ")
            pieces.extend(redirect.target.pieces)
        return tuple(pieces)

    def options_first(self) -> OptionsFirst | None:
        """The command as GNU getopt reads it: the set of short option letters however they
        are spelt (`-rf`, `-r -f`, `-fr`, after an operand), and the rest with long options
        sorted and operands in order. None when the command has no short options. Unknown
        words count as operands; `--` ends the options."""
        letters: set[str] = set()
        long_options: list[str] = []
        operands: list[Word] = []
        ended = False
        spellings = _OPTION_SPELLINGS.get(self.program)
        for word in self.argv[1:]:
            if ended or not word.known:
                operands.append(word)
            elif word.text == "--":
                ended = True
            elif _SHORT_OPTIONS.fullmatch(word.text):
                letters.update(word.text[1:])
            elif word.text.startswith("--"):
                letter = spellings.letter(word.text) if spellings is not None else None
                if letter is None:
                    long_options.append(word.text)
                else:
                    letters.add(letter)
            else:
                operands.append(word)
        if spellings is not None:
            letters.update(spellings.same[synonym] for synonym in letters & spellings.same.keys())
        if not letters:
            return None
        pieces: list[Piece] = [*self.subject()[:1]]
        for option in sorted(long_options):
            pieces.extend((" ", option))
        for operand in operands:
            pieces.append(" ")
            pieces.extend(operand.pieces)
        return OptionsFirst(frozenset(letters), tuple(pieces))


@dataclass(frozen=True, slots=True)
class OptionsFirst:
    """A command's short option letters, and the rest of it (see `options_first`)."""

    letters: frozenset[str]
    rest: tuple[Piece, ...]


_SHORT_OPTIONS = re.compile(r"-[A-Za-z0-9]+")


@dataclass(frozen=True, slots=True)
class _Spellings:
    """Other spellings of a program's short options: GNU getopt takes a long option by any
    unique abbreviation (`rm --rec --f` is `rm -r -f`), and some letters are synonyms (`-R`)."""

    long_names: tuple[str, ...]  # every long option the program has, to tell an abbreviation
    letters: dict[str, str]  # long option -> the short letter it means
    same: dict[str, str]  # short letter -> the letter it is a synonym of

    def letter(self, option: str) -> str | None:
        name = option[2:].partition("=")[0]
        if name in self.letters:
            return self.letters[name]
        matches = [long for long in self.long_names if name and long.startswith(name)]
        return self.letters.get(matches[0]) if len(matches) == 1 else None


# Programs deny rules name with short options (`rm -rf *`): without these, `rm -Rf /` and
# `rm --recursive --force /` ran past that rule. Other programs' long options are matched as
# written, so a rule for them must name them (docs/security-model.md).
_OPTION_SPELLINGS = {
    "rm": _Spellings(
        long_names=(
            "force", "interactive", "one-file-system", "no-preserve-root", "preserve-root",
            "recursive", "dir", "verbose", "help", "version",
        ),
        letters={"force": "f", "recursive": "r", "dir": "d", "verbose": "v"},
        same={"R": "r"},
    ),
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class ShellAnalysis:
    """A line the parser understood, and the simple commands it would run, in order."""

    line: str
    commands: tuple[SimpleCommand, ...]

    @property
    def opaque(self) -> tuple[SimpleCommand, ...]:
        return tuple(command for command in self.commands if command.opaque is not None)


@dataclass(frozen=True, slots=True)
class Unparsable:
    """A line the parser could not understand. `incomplete` means the text ended inside a
    construct (open quote, `if` without `fi`, here-document without its end): the shell
    would wait for more lines rather than run it."""

    line: str
    reason: str
    incomplete: bool = False


LineResult = ShellAnalysis | Unparsable


# Programs known not to read commands from their terminal: what is typed into them is keys for
# the program, never a command line it runs. Everything else given a terminal by an exec
# request may be a shell in disguise (`script`, `rbash`, a renamed bash, a REPL, `docker exec
# -it`), so its typed lines meet the gate. Pagers and editors (less, man, vim) are left out on
# purpose: they run commands of their own (`!cmd`, `:!cmd`); they draw a full screen, where the
# guard-mode gate judges nothing anyway (docs/security-model.md). Left out too, since they can
# be made to run a program: dmesg (pages through less), sort (--compress-program gets the data
# as its input, so `bash` runs the lines), rg (--pre), ip (netns exec, -batch), iftop (`!`).
_NON_SHELLS = frozenset(
    {
        "top", "htop", "btop", "atop", "iotop", "nload", "bmon", "nethogs", "powertop",
        "tail", "cat", "head", "tac", "wc", "uniq", "cut", "tr", "grep", "egrep",
        "fgrep", "ls", "ps", "pstree", "df", "du", "free", "uptime", "w", "who", "id",
        "whoami", "hostname", "uname", "date", "vmstat", "iostat", "mpstat", "pidstat",
        "sar", "ping", "ping6", "traceroute", "sleep", "true", "false", ":", "echo", "printf",
        "stty", "tty", "clear", "reset", "tput", "yes", "seq", "md5sum", "sha256sum", "stat",
        "file", "cmp", "diff", "nproc", "lscpu", "lsblk", "ss", "netstat", "test", "[",
    }
)  # fmt: skip
# `NAME=value` anywhere (`LD_PRELOAD=x top`, `env PAGER=... cmd`, `bash -c 'X=y top'`): the
# caller's environment can make any listed program load or run code of the caller's.
_ASSIGNMENT = re.compile(r"(?<![\w-])[A-Za-z_][A-Za-z0-9_]*(?:\[[^\]]*\])?\+?=")


def terminal_reads_commands(command: str) -> bool:
    """Whether an exec request with a terminal may run something that reads commands typed
    into it, so its lines must meet the gate. True unless every program the command runs is a
    known non-shell (`_NON_SHELLS`; wrappers count by what they run: `sudo top` is `top`),
    named bare or by a path in a system directory (no `..`), with no variable set anywhere in
    the command and no `env` or `printf -v` in it (an environment of the caller's choosing,
    `PATH=`, `LD_PRELOAD=`, makes `top` any program).
    A command that does not parse, an opaque program, a shell (`bash`, `sudo -i`), `script`,
    `rbash`, a renamed copy of bash, a REPL: all True (fail closed)."""
    result = analyse_line(command, interactive=False)
    if isinstance(result, Unparsable) or _ASSIGNMENT.search(command):
        return True
    wrappers = {
        command.via[: depth + 1] for command in result.commands for depth in range(len(command.via))
    }
    for simple in result.commands:
        if simple.opaque is not None or simple.reads_commands or "env" in simple.via:
            return True
        if simple.program == "printf" and any(w.text.startswith("-v") for w in simple.argv):
            return True  # sets a variable, maybe one already exported
        if not simple.argv:
            continue  # a bare redirect runs no program
        if (*simple.via, simple.program) in wrappers and simple.located:
            continue  # a wrapper whose command is listed after it
        if simple.program not in _NON_SHELLS or not simple.located:
            return True  # (`/tmp/top` may be a copy of bash)
    return False


def file_redirects(result: LineResult) -> list[tuple[RedirectOperation, Word]]:
    """Every file the analysed line opens through a redirect, in order, as (operation, path):
    operation is `read`, `write`, `append` or `readwrite`; path is the target `Word` after
    quote removal (`x-c''anary` is `x-canary`), whose `pieces` hold UNKNOWN where the shell
    decides (`> $F`, `< <(cmd)`): match with `Glob.match(word.pieces)`, and treat a path that
    is not `known` as possibly any file. Redirects of compound commands (`{ ...; } > f`,
    `while ...; done < f`) and of wrapped commands are included once each. A line that does not
    parse gives an empty list: the caller must not read that as "no file" (its verdict is
    already unparsable)."""
    if isinstance(result, Unparsable):
        return []
    seen: set[int] = set()
    found: list[tuple[RedirectOperation, Word]] = []
    for command in result.commands:
        for redirect in command.redirects:
            if id(redirect) not in seen:
                seen.add(id(redirect))
                found.append((redirect.operation, redirect.target))
    return found


def analyse_line(line: str, *, interactive: bool = True, input_unseen: bool = False) -> LineResult:
    """Every simple command one line (or one logical line) would run, or why we cannot tell.

    `interactive` is True for lines typed into an interactive shell, where bash expands
    history references (`!!`, `!rm`, `^a^b`) before it parses; an exec request's command
    runs in a non-interactive shell, where it does not. `input_unseen` says that the line's
    own standard input is something the gateway does not judge (an exec request without a
    terminal reads the caller's channel): a shell there reads its commands from it, as from
    a pipe, so it is opaque. Results are immutable and cached: people repeat their commands,
    and parsing is the costly part of a verdict."""
    if len(line) > MAX_CACHED_LINE_CHARS:
        result = _analyse(line, depth=0, aliases={}, via=(), input_unseen=input_unseen)
        return _with_history_check(result, interactive)
    return _analyse_line_cached(line, interactive, input_unseen)


@functools.lru_cache(maxsize=2048)
def _analyse_line_cached(line: str, interactive: bool, input_unseen: bool) -> LineResult:
    result = _analyse(line, depth=0, aliases={}, via=(), input_unseen=input_unseen)
    return _with_history_check(result, interactive)


def analyse_paste(text: str, *, interactive: bool = True) -> list[LineResult]:
    """A multi-line paste, judged per logical line before any of it is forwarded.

    Lines are joined while the text so far is incomplete for the parser: a trailing backslash
    (line continuation), an open quote, a compound command (`for ...; do` ... `done`) or a
    here-document up to its delimiter line; the body of a here-document is data, not commands.
    Aliases defined on one line are known on the next, as in bash. CR LF and CR count as
    line ends. Blank lines are skipped.
    """
    results: list[LineResult] = []
    aliases: dict[str, str | None] = {}
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    index = 0
    while index < len(lines):
        chunk = lines[index]
        index += 1
        if not chunk.strip():
            continue
        result = _analyse(chunk, depth=0, aliases=aliases, via=())
        taken = 1
        while (
            isinstance(result, Unparsable)
            and result.incomplete
            and index < len(lines)
            and taken < MAX_LOGICAL_LINE_LINES
        ):
            chunk = chunk + "\n" + lines[index]
            index += 1
            taken += 1
            result = _analyse(chunk, depth=0, aliases=aliases, via=())
        results.append(_with_history_check(result, interactive))
    return results


_HISTORY_EXPANSION = re.compile(r"!(?![\s=(]|$)")


def _history_reference(line: str) -> str | None:
    """The first history reference bash would expand in an interactive line, if any: `!`
    not followed by a blank, `=` or `(`, outside single quotes and not escaped; or a `^`
    quick substitution at the start of the line."""
    if line.lstrip().startswith("^"):
        return line.lstrip().split(None, 1)[0]
    if "!" not in line:
        return None
    index = 0
    quote: str | None = None
    while index < len(line):
        char = line[index]
        if char == "\\" and quote != "'":
            index += 2
            continue
        if quote == "'":
            quote = None if char == "'" else quote
        elif char == "'" and quote is None:
            quote = "'"
        elif char == '"':
            quote = None if quote == '"' else '"'
        elif (
            char == "!"
            and _HISTORY_EXPANSION.match(line, index)
            and not (quote == '"' and line[index + 1 : index + 2] == '"')
            and not line[:index].endswith(("$", "${", "["))  # $!, ${!name}, [!a-z]
        ):
            end = index + 1
            while end < len(line) and not line[end].isspace() and line[end] not in ";&|":
                end += 1
            return line[index:end]
        index += 1
    return None


def _with_history_check(result: LineResult, interactive: bool) -> LineResult:
    if not interactive or isinstance(result, Unparsable):
        return result
    reference = _history_reference(result.line)
    if reference is None:
        return result
    reason = (
        f"history expansion ({reference}) runs text from the shell's history, "
        "which the gateway cannot see"
    )
    opaque = SimpleCommand((Word.literal(reference),), opaque=reason)
    return ShellAnalysis(result.line, (opaque, *result.commands))


# ---------------------------------------------------------------------------------------------
# Parsing a line


_INCOMPLETE_MARKERS = ("unexpected EOF", "delimited by end-of-file")


def _analyse(
    line: str,
    *,
    depth: int,
    aliases: dict[str, str | None],
    via: tuple[str, ...],
    input_unseen: bool = False,
) -> LineResult:
    if len(line) > MAX_LINE_CHARS:
        return Unparsable(line, f"the line is longer than {MAX_LINE_CHARS} characters")
    if depth > MAX_DEPTH:
        return Unparsable(line, f"commands nested more than {MAX_DEPTH} levels deep")
    source, quoted_heredocs = _unquote_heredoc_delimiters(line)
    if _is_blank(source):
        return ShellAnalysis(line, ())
    try:
        trees = _parse(source)
    except NotImplementedError as exc:
        return Unparsable(line, f"shell syntax the parser does not support ({_short(exc)})")
    except RecursionError:
        return Unparsable(line, "the line nests too deeply to parse")
    except Exception as exc:  # bashlex raises many types for bad input; all mean the same
        message = _short(exc)
        incomplete = any(marker in message for marker in _INCOMPLETE_MARKERS)
        return Unparsable(line, f"cannot parse: {message}", incomplete=incomplete)
    walker = _CommandWalker(source, depth, aliases, via, quoted_heredocs, input_unseen=input_unseen)
    try:
        for tree in trees:
            walker.visit(tree)
    except RecursionError:
        return Unparsable(line, "the line nests too deeply to analyse")
    return ShellAnalysis(line, tuple(walker.commands))


_TIME_KEYWORD = re.compile(r"(?:^|(?<=[;&|(\n]))([ \t]*)(time(?:[ \t]+-p)?)(?=[ \t])")
_DOUBLE_BRACKETS = re.compile(r"(?:^|(?<=[\s;&|(!]))\[\[(?=\s)|(?<=\s)\]\](?=$|[\s;&|)])")


# A line of plain words: no quoting, expansion, globbing, redirection, operator or comment,
# and no assignment or reserved word in command position. Most typed commands look like this.
_PLAIN_WORD = r"[A-Za-z0-9_./:,+@%=-]+"
_PLAIN_LINE = re.compile(rf"[ \t]*[A-Za-z0-9_./:,+@%-]+(?:[ \t]+{_PLAIN_WORD})*[ \t]*")
_WORD_SPAN = re.compile(_PLAIN_WORD)
_RESERVED = frozenset(
    {
        "if", "then", "else", "elif", "fi", "case", "esac", "for", "select", "while",
        "until", "do", "done", "in", "function", "time", "coproc",
    }
)  # fmt: skip


def _plain_command(source: str) -> list[Any] | None:
    """The tree bashlex would build for a line of plain words, built directly: parsing is
    most of a verdict's cost, and this is most lines. None when the line is not that simple."""
    if not _PLAIN_LINE.fullmatch(source):
        return None
    words = [
        bashlex.ast.node(kind="word", word=m.group(), pos=(m.start(), m.end()), parts=[])
        for m in _WORD_SPAN.finditer(source)
    ]
    if words[0].word in _RESERVED:
        return None
    return [bashlex.ast.node(kind="command", parts=words, pos=(words[0].pos[0], words[-1].pos[1]))]


def _parse(source: str) -> list[Any]:
    """bashlex, retried once with same-length rewrites of two constructs it does not support:
    the `time` keyword (blanked: what it times is still analysed) and `[[ ... ]]` (read as
    `[ ... ]`, which can only find extra commands, never hide one)."""
    plain = _plain_command(source)
    if plain is not None:
        return plain
    try:
        return list(bashlex.parse(source))
    except NotImplementedError:
        rewritten = _TIME_KEYWORD.sub(lambda m: m.group(1) + " " * len(m.group(2)), source)
        rewritten = _DOUBLE_BRACKETS.sub(lambda m: m.group(0)[0] + " ", rewritten)
        if rewritten == source:
            raise
    except Exception:
        rewritten = _DOUBLE_BRACKETS.sub(lambda m: m.group(0)[0] + " ", source)
        if rewritten == source:
            raise
    return list(bashlex.parse(rewritten))


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _is_blank(source: str) -> bool:
    """Empty, or only whitespace and comments (bashlex cannot parse those)."""
    for raw_line in source.split("\n"):
        stripped = raw_line.strip()
        if stripped and not stripped.startswith("#"):
            return False
    return True


_HEREDOC_OP = re.compile(r"<<-?[ \t]*")


def _unquote_heredoc_delimiters(line: str) -> tuple[str, frozenset[str]]:
    """bashlex cannot end a here-document whose delimiter is quoted (`<<'EOF'`): rewrite the
    delimiter unquoted and remember it, since a quoted delimiter means the body is not expanded.
    Only operators outside quotes are touched (found by `_unquoted_positions`)."""
    if "<<" not in line:
        return line, frozenset()
    unquoted = _unquoted_positions(line)
    out: list[str] = []
    quoted: set[str] = set()
    position = 0
    for match in _HEREDOC_OP.finditer(line):
        start = match.start()
        if start < position or start not in unquoted or line.startswith("<<<", start):
            continue
        if start > 0 and line[start - 1] == "<":
            continue
        end = match.end()
        delimiter = re.match(r"'([^'\n]*)'|\"([^\"\n]*)\"|\\(\w+)", line[end:])
        if delimiter is None:
            continue
        name = next(group for group in delimiter.groups() if group is not None)
        if not name or not re.fullmatch(r"[\w.-]+", name):
            continue
        quoted.add(name)
        out.append(line[position:end])
        out.append(name)
        position = end + delimiter.end()
    out.append(line[position:])
    return "".join(out), frozenset(quoted)


def _unquoted_positions(line: str) -> set[int]:
    """Indices of characters outside quotes and comments, by a small quote-aware scan."""
    positions: set[int] = set()
    index = 0
    quote: str | None = None
    while index < len(line):
        char = line[index]
        if quote is None:
            if char == "\\":
                index += 2
                continue
            if char in "'\"":
                quote = char
            elif char == "#" and (index == 0 or line[index - 1] in " \t\n;&|("):
                newline = line.find("\n", index)
                if newline < 0:
                    break
                index = newline
                continue
            else:
                positions.add(index)
        elif quote == "'":
            if char == "'":
                quote = None
        else:
            if char == "\\":
                index += 2
                continue
            if char == '"':
                quote = None
        index += 1
    return positions


# ---------------------------------------------------------------------------------------------
# Words


class _Quote(enum.Enum):
    NONE = "none"
    SINGLE = "single"
    DOUBLE = "double"
    ANSI_C = "ansi-c"


_ANSI_C_SIMPLE = {
    "a": "\a",
    "b": "\b",
    "e": "\x1b",
    "E": "\x1b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    "'": "'",
    '"': '"',
    "?": "?",
}
_SPECIAL_PARAMETERS = "@*#?-$!0123456789"
_DOUBLE_QUOTE_ESCAPABLE = '$`"\\\n'


class _WordScanner:
    """Unquotes one word from its source text: one handler per quoting state.

    `spans` are the (start, end) offsets, relative to the word, of command and process
    substitutions that bashlex already parsed; they become UNKNOWN pieces and their commands
    are analysed separately by the walker.
    """

    def __init__(self, raw: str, spans: Sequence[tuple[int, int]]) -> None:
        self.raw = raw
        self.spans = {start: end for start, end in spans}
        self.index = 0
        self.state = _Quote.NONE
        self.pieces: list[Piece] = []
        self.text: list[str] = []
        self.hidden: str | None = None
        self._handlers: dict[_Quote, Callable[[str], None]] = {
            _Quote.NONE: self._unquoted,
            _Quote.SINGLE: self._single,
            _Quote.DOUBLE: self._double,
            _Quote.ANSI_C: self._ansi_c,
        }

    def scan(self) -> Word:
        if self.raw.startswith("~"):
            self._tilde()
        while self.index < len(self.raw):
            self._handlers[self.state](self.raw[self.index])
        return Word("".join(self.text), _merge(self.pieces), self.hidden)

    # -- output helpers
    def _emit(self, char: str) -> None:
        self.pieces.append(char)
        self.text.append(char)

    def _unknown(self, start: int, end: int) -> None:
        self.pieces.append(UNKNOWN)
        self.text.append(self.raw[start:end])
        self.index = end

    # -- states
    def _unquoted(self, char: str) -> None:
        raw, index = self.raw, self.index
        if index in self.spans:  # <(...) and >(...) become a file name we cannot know
            self._unknown(index, self.spans[index])
        elif char == "\\":
            if index + 1 < len(raw):
                if raw[index + 1] != "\n":
                    self._emit(raw[index + 1])
                self.index += 2
            else:
                self._emit("\\")
                self.index += 1
        elif char == "'":
            self.state = _Quote.SINGLE
            self.index += 1
        elif char == '"':
            self.state = _Quote.DOUBLE
            self.index += 1
        elif char == "$" and raw.startswith("$'", index):
            self.state = _Quote.ANSI_C
            self.index += 2
        elif char == "$" and raw.startswith('$"', index):
            self.state = _Quote.DOUBLE
            self.index += 2
        elif char in "$`":
            self._expansion()
        elif char in "*?":
            self._unknown(index, index + 1)
        elif char == "[" and "]" in raw[index + 1 :]:
            self._unknown(index, raw.index("]", index + 1) + 1)
        elif char == "{" and self._brace_end(index) is not None:
            end = self._brace_end(index)
            assert end is not None
            self._unknown(index, end)
        else:
            self._emit(char)
            self.index += 1

    def _single(self, char: str) -> None:
        if char == "'":
            self.state = _Quote.NONE
        else:
            self._emit(char)
        self.index += 1

    def _double(self, char: str) -> None:
        raw, index = self.raw, self.index
        if char == "\\" and index + 1 < len(raw) and raw[index + 1] in _DOUBLE_QUOTE_ESCAPABLE:
            if raw[index + 1] != "\n":
                self._emit(raw[index + 1])
            self.index += 2
        elif char == '"':
            self.state = _Quote.NONE
            self.index += 1
        elif char in "$`":
            self._expansion()
        else:
            self._emit(char)
            self.index += 1

    def _ansi_c(self, char: str) -> None:
        raw, index = self.raw, self.index
        if char == "'":
            self.state = _Quote.NONE
            self.index += 1
            return
        if char != "\\" or index + 1 >= len(raw):
            self._emit(char)
            self.index += 1
            return
        code = raw[index + 1]
        if code in _ANSI_C_SIMPLE:
            self._emit(_ANSI_C_SIMPLE[code])
            self.index += 2
        elif code in "01234567":
            digits = re.match(r"[0-7]{1,3}", raw[index + 1 :])
            assert digits is not None
            self._emit(chr(int(digits.group(), 8) & 0xFF))
            self.index += 1 + digits.end()
        elif code in "xuU":
            limit = {"x": 2, "u": 4, "U": 8}[code]
            digits = re.match(f"[0-9a-fA-F]{{1,{limit}}}", raw[index + 2 :])
            if digits is None:
                self._emit("\\" + code)
                self.index += 2
            else:
                value = int(digits.group(), 16)
                self._emit(chr(value) if value <= 0x10FFFF else "\ufffd")
                self.index += 2 + digits.end()
        elif code == "c" and index + 2 < len(raw):
            self._emit(chr(ord(raw[index + 2]) & 0x1F))
            self.index += 3
        else:
            self._emit("\\" + code)
            self.index += 2

    # -- expansions
    def _expansion(self) -> None:
        raw, index = self.raw, self.index
        if index in self.spans:
            self._unknown(index, self.spans[index])
            return
        if raw[index] == "`":
            end = _find_closing_backtick(raw, index + 1)
            self.hidden = "a backtick substitution the parser did not expose"
            self._unknown(index, end)
            return
        following = raw[index + 1 : index + 2]
        if following == "(":
            end = _find_closing(raw, index + 1, "(", ")")
            self.hidden = "a command substitution the parser did not expose"
            self._unknown(index, end)
        elif following == "{":
            end = _find_closing(raw, index + 1, "{", "}")
            inner = raw[index + 2 : end - 1]
            if "$(" in inner or "`" in inner or "<(" in inner or ">(" in inner:
                self.hidden = "a command substitution inside ${...}"
            elif reason := _parameter_reason(inner):
                self.hidden = reason
            self._unknown(index, end)
        elif name := re.match(r"[A-Za-z_][A-Za-z0-9_]*", raw[index + 1 :]):
            self._unknown(index, index + 1 + name.end())
        elif following and following in _SPECIAL_PARAMETERS:
            self._unknown(index, index + 2)
        else:
            self._emit("$")
            self.index += 1

    def _tilde(self) -> None:
        end = self.raw.find("/")
        end = len(self.raw) if end < 0 else end
        prefix = self.raw[:end]
        if re.fullmatch(r"~[A-Za-z0-9_.+-]*", prefix):
            self._unknown(0, end)

    def _brace_end(self, index: int) -> int | None:
        """End of a brace expansion `{a,b}` / `{1..3}` starting at `index`, if it is one."""
        depth = 0
        for position in range(index, len(self.raw)):
            char = self.raw[position]
            if char == "{":
                depth += 1
            elif char == "}":
                depth -= 1
                if depth == 0:
                    inner = self.raw[index + 1 : position]
                    return position + 1 if ("," in inner or ".." in inner) else None
        return None


def _find_closing(raw: str, index: int, opening: str, closing: str) -> int:
    """Index after the bracket matching raw[index]; the end of the text if unbalanced."""
    depth = 0
    position = index
    while position < len(raw):
        char = raw[position]
        if char == "\\":
            position += 2
            continue
        if char == opening:
            depth += 1
        elif char == closing:
            depth -= 1
            if depth == 0:
                return position + 1
        position += 1
    return len(raw)


def _find_closing_backtick(raw: str, index: int) -> int:
    position = index
    while position < len(raw):
        if raw[position] == "\\":
            position += 2
            continue
        if raw[position] == "`":
            return position + 1
        position += 1
    return len(raw)


def _merge(pieces: Sequence[Piece]) -> tuple[Piece, ...]:
    """Join adjacent literal characters and collapse runs of UNKNOWN."""
    merged: list[Piece] = []
    for piece in pieces:
        if isinstance(piece, str):
            if merged and isinstance(merged[-1], str):
                merged[-1] = merged[-1] + piece
            else:
                merged.append(piece)
        elif not merged or merged[-1] is not UNKNOWN:
            merged.append(piece)
    return tuple(merged)


# ---------------------------------------------------------------------------------------------
# Arithmetic: bash evaluates a name's value as an expression, and `a[$(cmd)]` in it runs cmd


_ARITHMETIC_REASON = (
    "bash evaluates this as arithmetic, where a variable's value is evaluated in turn and "
    "can run a command (`a[$(...)]`)"
)
_ARITHMETIC_NUMBER = re.compile(r"\b(?:0[xX][0-9a-fA-F]+|[0-9]+#[0-9A-Za-z@_]+|[0-9]+)\b")
_ARITHMETIC_LITERAL = re.compile(r"[\s0-9+\-*/%<>=!&|^~?:(),]*")
_ARITHMETIC_TESTS = frozenset({"-eq", "-ne", "-lt", "-le", "-gt", "-ge"})
_SUBSCRIPT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\[(.*)\]", re.DOTALL)


def _literal_arithmetic(text: str) -> bool:
    """Whether an arithmetic expression holds only numbers and operators: no name (whose
    value bash would evaluate), no `$`, backtick, quote or subscript."""
    return _ARITHMETIC_LITERAL.fullmatch(_ARITHMETIC_NUMBER.sub("0", text)) is not None


_NUMERIC_PARAMETER = re.compile(r"\$(?:[#?$!]|\{#[A-Za-z_][A-Za-z0-9_]*\})")


def _literal_word(word: Word) -> bool:
    """An operand bash evaluates harmlessly: a literal, or `$#`, `$?`, `${#x}` (always a
    number)."""
    if not word.known:
        return _NUMERIC_PARAMETER.fullmatch(word.text) is not None
    return _literal_arithmetic(word.text)


def _safe_name(word: Word) -> bool:
    """A variable name argument (`read NAME`, `printf -v NAME`, `declare NAME=...`,
    `[[ -v NAME ]]`): known, and any array subscript in it literal."""
    name_pieces: list[Piece] = []
    for piece in word.pieces:
        if isinstance(piece, str) and "=" in piece:
            name_pieces.append(piece.split("=", 1)[0])
            break
        name_pieces.append(piece)
    if UNKNOWN in name_pieces:
        return False
    name = "".join(piece for piece in name_pieces if isinstance(piece, str))
    subscript = _SUBSCRIPT.match(name)
    return (
        subscript is None
        or subscript.group(1) in ("@", "*")
        or (_literal_arithmetic(subscript.group(1)))
    )


_LIST_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\+?=\(")
_LIST_SUBSCRIPT = re.compile(r"\[([^\]]*)\]=")


def _compound_value_hides(word: Word) -> bool:
    """Whether a declaration argument is a list assignment (`'x=(...)'`, however quoted) that
    bash parses again, so text quoted for us runs: `declare -a 'x=($(rm f))'` runs rm, and a
    subscript (`[$y]=1`, `[y]=1`) meets arithmetic evaluation. Literal words and numeric
    subscripts are fine; anything else, or a value we cannot read, is not (fail closed)."""
    if not _LIST_ASSIGNMENT.match(word.text):
        return False
    value = word.text.partition("=")[2]
    if not word.known or any(mark in value for mark in ("$", "`", "<(", ">(", "\\")):
        return True
    return any(not _literal_arithmetic(m.group(1)) for m in _LIST_SUBSCRIPT.finditer(value))


def _arithmetic_reason(name: str, argv: Sequence[Word]) -> str | None:
    """Why a builtin's arguments reach bash's arithmetic evaluation with something that is
    not a literal, or None. Found by trying bash 5.2 with `a[$(touch f)]` as a variable's
    value: `[[ x -eq 0 ]]`, `let`, `declare -i`/`-n`, names given to `read`, `printf -v`,
    `declare` and `[[ -v ]]`. (`(( ))`, `$(( ))`, `${a[x]}`, `${x:x}`, `${!x}` are
    handled where they are parsed.)"""
    args = list(argv[1:])
    if name == "let":
        if any(not _literal_word(word) for word in args):
            return _ARITHMETIC_REASON
    elif name in ("[", "[[", "test"):
        for index, word in enumerate(args):
            if word.text in _ARITHMETIC_TESTS and word.known:
                operands = args[index - 1 : index] + args[index + 1 : index + 2]
                if any(not _literal_word(operand) for operand in operands):
                    return _ARITHMETIC_REASON
            elif word.text == "-v" and index + 1 < len(args) and not _safe_name(args[index + 1]):
                return _ARITHMETIC_REASON
    elif name in _DECLARATIONS:
        flags = _short_flags(args, _Options(short_with_argument=""))
        if "i" in flags or "n" in flags:
            return (
                f"{name} -{'i' if 'i' in flags else 'n'} makes later values meet arithmetic "
                "evaluation, where a value can run a command"
            )
        names = [word for word in args if not (word.known and word.text.startswith(("-", "+")))]
        if any(not _safe_name(word) for word in names):
            return _ARITHMETIC_REASON
        if any(_compound_value_hides(word) for word in names):
            return (
                f"{name} parses a quoted list assignment again: its subscripts and "
                "expansions run, unseen ('x=($(cmd))')"
            )
    elif name in ("read", "mapfile", "readarray"):
        reading = name == "read"
        options = _Options(short_with_argument="adinNptu" if reading else "dnOsuCc")
        index = _skip_options(args, 0, options)
        if not reading and _option_values(args[:index], "C"):
            return f"{name} -C runs a callback string the gateway does not analyse"
        names = args[index:] + (_option_values(args[:index], "a") if reading else [])
        if any(not _safe_name(word) for word in names):
            return _ARITHMETIC_REASON
    elif name == "printf":
        names = _option_values(args, "v")
        if any(not _safe_name(word) for word in names):
            return _ARITHMETIC_REASON
    return None


# Variables whose value bash runs: prompts expand `$(...)` (PS4 under `set -x`, even in a
# non-interactive shell), PROMPT_COMMAND runs, BASH_ENV/ENV name a script for later shells.
# BASH_CMDS[ls]=/bin/rm (like `hash -p /bin/rm ls`) and BASH_ALIASES make a name run another
# program: `ls -rf /` then ran past `rm -rf *`.
_COMMAND_TABLES = frozenset({"BASH_CMDS", "BASH_ALIASES"})
_ARRAY_ELEMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\[[^=]*\]\+?=")
_CODE_VARIABLES = frozenset(
    {"PS0", "PS1", "PS2", "PS3", "PS4", "PROMPT_COMMAND", "BASH_ENV", "ENV", *_COMMAND_TABLES}
)


def _code_variable_reason(name: str, argv: Sequence[Word]) -> str | None:
    """Why a builtin that assigns by name (`read`, `mapfile`, `printf -v`, `getopts`) gives a
    code variable a value the gateway cannot read (`read -r PS4 < file; set -x` ran the
    file's `$(...)`), or None. Assignments written out (`PS4=...`) are judged where parsed."""
    args = list(argv[1:])
    if name == "read":
        index = _skip_options(args, 0, _Options(short_with_argument="adinNptu"))
        names = args[index:] + _option_values(args[:index], "a")
    elif name in ("mapfile", "readarray"):
        index = _skip_options(args, 0, _Options(short_with_argument="dnOsuCc"))
        names = args[index:]
    elif name == "printf":
        names = _option_values(args, "v")
    elif name == "getopts":
        names = args[1:2]
    elif name == "hash":
        if "p" in _short_flags(args, _Options(short_with_argument="pt")):
            return "hash -p makes a command name run another program"
        return None
    else:
        return None
    for word in names:
        base = word.text.partition("[")[0]
        if base in _CODE_VARIABLES:
            return f"{name} sets {base} to a value the gateway cannot read; bash runs it as code"
    return None


def _option_values(words: Sequence[Word], letter: str) -> list[Word]:
    """The values given to a short option (`-v NAME`, `-vNAME`), as words."""
    values: list[Word] = []
    for index, word in enumerate(words):
        text = word.text
        if not word.known or not text.startswith("-") or text.startswith("--"):
            continue
        if text[1:].endswith(letter) and index + 1 < len(words):
            values.append(words[index + 1])
        elif letter in text[1:-1]:
            values.append(Word.literal(text[text.index(letter, 1) + 1 :]))
    return values


def _parameter_reason(inner: str) -> str | None:
    """Why a `${...}` expansion (its text between the braces) evaluates something that is not a
    literal as arithmetic: a subscript (`${a[i]}`), a substring (`${x:i:n}`), or indirection
    (`${!x}`, whose value may name `a[$(...)]`)."""
    body = inner[1:] if inner.startswith("#") and len(inner) > 1 else inner
    if body.startswith("!"):
        rest = body[1:]
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(?:[@*]|\[[@*]\])", rest):
            return "indirect expansion evaluates a name taken from a variable's value"
        return None
    name = re.match(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+|[@*#?$!-]", body)
    if name is None:
        return None
    rest = body[name.end() :]
    if rest.startswith("["):
        end = _find_closing(rest, 0, "[", "]")
        subscript = rest[1 : end - 1]
        if subscript not in ("@", "*") and not _literal_arithmetic(subscript):
            return _ARITHMETIC_REASON
        rest = rest[end:]
    substring = rest.startswith(":") and rest[1:2] not in ("-", "=", "+", "?")
    if substring and not _literal_arithmetic(rest[1:]):
        return _ARITHMETIC_REASON
    return None


# ---------------------------------------------------------------------------------------------
# Walking the tree


_PROMPT_STRINGS = frozenset({"PS0", "PS1", "PS2", "PS3", "PS4"})
_DECLARATIONS = frozenset({"export", "declare", "typeset", "readonly", "local"})
_SHELLS = frozenset(
    {
        "sh", "bash", "rbash", "dash", "zsh", "ksh", "ksh93", "mksh", "pdksh", "oksh", "ash",
        "busybox-sh", "yash", "posh", "lksh", "csh", "tcsh", "fish",
    }
)  # fmt: skip
_SYSTEM_DIRS = ("/bin/", "/usr/bin/", "/usr/local/bin/", "/sbin/", "/usr/sbin/")
_INPUT_REDIRECTS = frozenset({"<", "<<", "<<-", "<<<", "<>", "<&"})
_REDIRECT_OPERATIONS: dict[str, RedirectOperation] = {
    "<": "read",
    "<&": "read",
    ">": "write",
    ">|": "write",
    "&>": "write",
    ">&": "write",
    ">>": "append",
    "&>>": "append",
    "<>": "readwrite",
}


@dataclass(slots=True)
class _Context:
    """Where a command sits: does its standard input come from a pipe or a redirect?"""

    stdin_fed: bool = False


@dataclass(slots=True)
class _CommandWalker:
    source: str
    depth: int
    aliases: dict[str, str | None]
    via: tuple[str, ...]
    quoted_heredocs: frozenset[str]
    commands: list[SimpleCommand] = field(default_factory=list)
    input_unseen: bool = False  # the line's standard input is not judged (see analyse_line)

    def visit(self, node: Any, context: _Context | None = None) -> None:
        kind = getattr(node, "kind", None)
        if kind == "for" and len(node.parts) > 1:  # `for PS4 in ...` sets a code variable
            name = getattr(node.parts[1], "word", "")
            if name in _CODE_VARIABLES:
                word = Word.literal(name)
                reason = f"for sets {name}, whose value bash runs as code"
                self._add(SimpleCommand((Word.literal("for"), word), opaque=reason, via=self.via))
        if kind == "command":
            self._command(node, context or _Context(stdin_fed=self.input_unseen))
        elif kind == "pipeline":
            first = True
            for part in node.parts:
                if getattr(part, "kind", None) in ("pipe", "reservedword"):
                    continue
                self.visit(part, _Context(stdin_fed=not first or self.input_unseen))
                first = False
        elif kind in ("commandsubstitution", "processsubstitution"):
            self.visit(node.command)
        elif kind in ("word", "assignment"):
            for part in getattr(node, "parts", ()):
                self.visit(part)
        elif kind == "redirect":  # a compound command's (`{ ...; } > f`): its own entry
            self._redirect(node)
            redirect = self._file_redirect(node)
            if redirect is not None:
                self._add(SimpleCommand((), via=self.via, redirects=(redirect,)))
        elif kind in ("parameter", "tilde", "operator", "reservedword", "pipe", "heredoc"):
            return
        elif kind == "compound" and self.source.startswith("((", node.pos[0]):
            self._arithmetic_command(node)
        else:
            for attribute in ("parts", "list", "redirects"):
                for child in getattr(node, attribute, None) or ():
                    self.visit(child)
            inner = getattr(node, "command", None)
            if inner is not None:
                self.visit(inner)

    def _redirect(self, node: Any) -> None:
        output = getattr(node, "output", None)
        if getattr(output, "kind", None) == "word":
            self.visit(output)
            scanned = self._word(output)  # `<<< "${a[x]}"`, `> ${X:-$(cmd)}`
            if scanned.hidden:
                self._add(SimpleCommand((scanned,), opaque=scanned.hidden, via=self.via))
        heredoc = getattr(node, "heredoc", None)
        if heredoc is None:
            return
        delimiter = getattr(output, "word", "")
        body = str(getattr(heredoc, "value", ""))
        if delimiter in self.quoted_heredocs:
            return
        if "$(" in body or "`" in body or "<(" in body:
            self.commands.append(
                SimpleCommand(
                    (Word.literal("<<" + str(delimiter)),),
                    opaque="a here-document body runs a command substitution",
                    via=self.via,
                )
            )
        elif "$[" in body or any(
            _parameter_reason(match.group(1)) for match in re.finditer(r"\$\{([^}]*)\}", body)
        ):
            self._add(
                SimpleCommand(
                    (Word.literal("<<" + str(delimiter)),),
                    opaque="a here-document body evaluates arithmetic: " + _ARITHMETIC_REASON,
                    via=self.via,
                )
            )

    def _arithmetic_command(self, node: Any) -> None:
        """`(( expr ))`, which bashlex reads as two nested subshells: bash evaluates `expr`
        as arithmetic, where a name's value is itself evaluated and may run `$(...)`."""
        start, end = node.pos
        text = self.source[start:end]
        inner = text[2:-2] if text.endswith("))") else text[2:]
        if not _literal_arithmetic(inner):
            self._add(SimpleCommand((Word.literal(text),), opaque=_ARITHMETIC_REASON, via=self.via))

    def _file_redirect(self, node: Any) -> Redirect | None:
        """The file a redirect node opens, or None for descriptor duplication, closing and
        here-documents (see `Redirect`)."""
        operator = str(getattr(node, "type", ""))
        output = getattr(node, "output", None)
        if getattr(output, "kind", None) != "word":
            return None  # `2>&1`, `<&3`, `3<&-`: bashlex gives the descriptor, not a word
        operation = _REDIRECT_OPERATIONS.get(operator)
        if operation is None:
            return None
        target = self._word(output)
        if operator in (">&", "<&") and target.known and re.fullmatch(r"\d+|-", target.text):
            return None
        return Redirect(operation, target)

    def _command(self, node: Any, context: _Context) -> None:
        words: list[Word] = []
        redirects: list[Redirect] = []
        stdin_fed = context.stdin_fed
        for part in node.parts:
            kind = getattr(part, "kind", None)
            if kind == "word":
                words.append(self._word(part))
                self.visit(part)
            elif kind == "assignment":
                self.visit(part)
                scanned = self._word(part)
                if scanned.hidden:
                    self._add(SimpleCommand((scanned,), opaque=scanned.hidden))
                self._prompt_variable(scanned)
            elif kind == "redirect":
                self._redirect(part)
                if getattr(part, "type", "") in _INPUT_REDIRECTS:
                    stdin_fed = True
                redirect = self._file_redirect(part)
                if redirect is not None:
                    redirects.append(redirect)
        first = len(self.commands)
        self._resolve(words, self.via, stdin_fed)
        if redirects:
            # the redirects apply to what this command runs, wrapped commands included
            files = tuple(redirects)
            for index in range(first, len(self.commands)):
                command = self.commands[index]
                self.commands[index] = dataclasses.replace(
                    command, redirects=command.redirects + files
                )
            if len(self.commands) == first:  # `> f`, `X=1 < f`: no program, still a file
                self._add(SimpleCommand((), via=self.via, redirects=files))

    def _prompt_variable(self, word: Word) -> None:
        """`PROMPT_COMMAND=...` runs its value before every prompt, and `PS1='$(...)'` runs
        the substitution each time the prompt is drawn: both are commands in disguise."""
        name, equals, value = word.text.partition("=")
        if not equals:
            return
        name = name.rstrip("+").partition("[")[0]  # `PS4[0]=` sets PS4
        if name in _COMMAND_TABLES:
            reason = f"{name} changes which program a command name runs"
            self._add(SimpleCommand((word,), opaque=reason, via=self.via))
        elif name == "PROMPT_COMMAND":
            self._parse_string(
                _Parse([Word(value, (value,) if word.known else (UNKNOWN,))]),
                (*self.via, "PROMPT_COMMAND"),
            )
        elif name in ("BASH_ENV", "ENV"):
            target = Word.literal(value) if word.known else Word(value, (UNKNOWN,))
            why = _script_from_input(target)
            if why is not None:
                reason = f"{name} makes shells started later run a script: {why}"
                self._add(SimpleCommand((word,), opaque=reason, via=self.via))
        elif name in _PROMPT_STRINGS and ("$(" in value or "`" in value or not word.known):
            reason = f"{name} runs a command substitution each time the prompt is drawn"
            self._add(SimpleCommand((word,), opaque=reason, via=self.via))

    def _word(self, node: Any) -> Word:
        start, end = node.pos
        spans = [
            (part.pos[0] - start, part.pos[1] - start)
            for part in getattr(node, "parts", ())
            if getattr(part, "kind", None) in ("commandsubstitution", "processsubstitution")
        ]
        return _WordScanner(self.source[start:end], spans).scan()

    def _add(self, command: SimpleCommand) -> None:
        self.commands.append(command)

    def _resolve(self, words: list[Word], via: tuple[str, ...], stdin_fed: bool) -> None:
        """Record the command `words` and, for wrappers, the command they run."""
        if words and _ARRAY_ELEMENT.match(words[0].text):  # bashlex reads `a[i]=v` as a word
            self._prompt_variable(words[0])
        words = _drop_assignments(words)
        if not words:
            return
        for word in words:
            if word.hidden:
                self._add(SimpleCommand(tuple(words), opaque=word.hidden, via=via))
                return
        name = words[0]
        basename = _program_name(name)
        if basename is None:
            reason = f"the program name {name.text!r} is only known when the shell runs it"
            self._add(SimpleCommand(tuple(words), opaque=reason, via=via))
            return
        argv = (Word.literal(basename), *words[1:])
        if "/" in name.text and (
            not name.text.startswith(_SYSTEM_DIRS) or ".." in name.text.split("/")
        ):  # (`/usr/bin/../../tmp/top` leaves the system directory)
            first = len(self.commands)
            self._resolve_named(argv, basename, via, stdin_fed)
            if len(self.commands) > first:  # this level's command is the first one added
                self.commands[first] = dataclasses.replace(self.commands[first], located=False)
            return
        self._resolve_named(argv, basename, via, stdin_fed)

    def _resolve_named(
        self, argv: tuple[Word, ...], basename: str, via: tuple[str, ...], stdin_fed: bool
    ) -> None:
        if basename in self.aliases:
            self._alias_use(basename, argv, via)
            return
        arithmetic = _arithmetic_reason(basename, argv) or _code_variable_reason(basename, argv)
        if arithmetic is not None:
            self._add(SimpleCommand(argv, opaque=arithmetic, via=via))
            return
        wrapper = _WRAPPERS.get(basename)
        if wrapper is None:
            if basename in _SHELLS:
                wrapper = _shell_wrapper
            else:
                self._add(SimpleCommand(argv, via=via))
                if basename == "alias":
                    self._alias_definitions(argv)
                elif basename in _DECLARATIONS:
                    for word in argv[1:]:
                        self._prompt_variable(word)
                return
        inner = wrapper(list(argv))
        if isinstance(inner, _ReadsInput) and stdin_fed:
            reason = f"{basename} reads the commands to run from its input, which is not visible"
            self._add(SimpleCommand(argv, opaque=reason, via=via, reads_commands=True))
            return
        if isinstance(inner, _ReadsInput):
            self._add(SimpleCommand(argv, via=via, reads_commands=True))
            return
        if isinstance(inner, _Opaque):
            self._add(SimpleCommand(argv, opaque=inner.reason, via=via))
            return
        self._add(SimpleCommand(argv, via=via))
        inner_via = (*via, basename)
        if isinstance(inner, _Run):
            self._resolve(inner.words, inner_via, stdin_fed)
        elif isinstance(inner, _Parse):
            self._parse_string(inner, inner_via)

    def _parse_string(self, inner: _Parse, via: tuple[str, ...]) -> None:
        label = via[-1] if via else "string"
        if not all(word.known for word in inner.words):
            text = " ".join(word.text for word in inner.words)
            reason = f"{label} runs a string that is only known when the shell runs it"
            self._add(SimpleCommand((Word.literal(label), *inner.words), opaque=reason, via=via))
            return
        text = " ".join(word.text for word in inner.words)
        result = _analyse(
            text,
            depth=self.depth + 1,
            aliases=self.aliases,
            via=via,
            input_unseen=self.input_unseen,
        )
        if isinstance(result, Unparsable):
            reason = f"{label} runs a string that cannot be analysed: {result.reason}"
            self._add(SimpleCommand((Word.literal(label), Word.literal(text)), reason, via))
            return
        self.commands.extend(result.commands)

    def _alias_definitions(self, argv: Sequence[Word]) -> None:
        for word in argv[1:]:
            if "=" not in word.text or word.text.startswith("-"):
                continue
            name, _, value = word.text.partition("=")
            self.aliases[name] = value if word.known else None

    def _alias_use(self, name: str, argv: Sequence[Word], via: tuple[str, ...]) -> None:
        """An alias defined in this input: opaque (bash may or may not expand it, depending
        on where the definition sits), and the expansion is analysed too, so a deny rule
        matching what the alias stands for still applies."""
        reason = f"{name!r} is an alias defined in this input"
        self._add(SimpleCommand(tuple(argv), opaque=reason, via=via))
        value = self.aliases.get(name)
        if value is None:
            return
        expanded = " ".join([value, *(_requote(word) for word in argv[1:])])
        aliases = {key: val for key, val in self.aliases.items() if key != name}
        result = _analyse(
            expanded,
            depth=self.depth + 1,
            aliases=aliases,
            via=(*via, "alias"),
            input_unseen=self.input_unseen,
        )
        if isinstance(result, ShellAnalysis):
            self.commands.extend(result.commands)


def _requote(word: Word) -> str:
    if word.known:
        return "'" + word.text.replace("'", "'\\''") + "'"
    return word.text


def _drop_assignments(words: list[Word]) -> list[Word]:
    """Leading `NAME=value` words are environment for the command, not the command."""
    index = 0
    while index < len(words) and re.match(r"[A-Za-z_][A-Za-z0-9_]*=", words[index].text):
        index += 1
    return words[index:]


def _program_name(word: Word) -> str | None:
    """The program's name with its path removed, or None when the shell decides it at run time.
    A directory part may be unknown (`$HOME/bin/rm` is still `rm`); the name itself may not."""
    if not word.pieces:
        return ""
    last = word.pieces[-1]
    if not isinstance(last, str):
        return None
    if "/" not in last:
        return last if len(word.pieces) == 1 else None
    name = posixpath.basename(last)
    return name or None


# ---------------------------------------------------------------------------------------------
# Wrappers: what each runs, and how its options are read


@dataclass(frozen=True, slots=True)
class _Run:
    """The wrapper runs these words as a command."""

    words: list[Word]


@dataclass(frozen=True, slots=True)
class _Parse:
    """The wrapper hands these words, joined by spaces, to a shell parser."""

    words: list[Word]


@dataclass(frozen=True, slots=True)
class _Opaque:
    """The wrapper runs something the gateway cannot see (a line from history)."""

    reason: str


@dataclass(frozen=True, slots=True)
class _ReadsInput:
    """The wrapper (a shell with no command string) reads commands from standard input."""


_Inner = _Run | _Parse | _Opaque | _ReadsInput | None


@dataclass(frozen=True, slots=True)
class _Options:
    """How a program reads its options: which short and long options take an argument."""

    short_with_argument: str = ""
    long_with_argument: frozenset[str] = frozenset()
    stop_at_assignments: bool = False


def _skip_options(words: list[Word], start: int, options: _Options) -> int:
    """Index of the first word after the options (and, if asked, VAR=x assignments)."""
    index = start
    while index < len(words):
        word = words[index]
        text = word.text
        if not word.known:
            return index
        if text == "--":
            return index + 1
        if options.stop_at_assignments and re.match(r"[A-Za-z_][A-Za-z0-9_]*=", text):
            index += 1
            continue
        if text.startswith("--"):
            name = text[2:].split("=", 1)[0]
            index += 1
            if "=" not in text and name in options.long_with_argument:
                index += 1
            continue
        if text.startswith("-") and len(text) > 1:
            index += 1
            for position, letter in enumerate(text[1:], start=1):
                if letter in options.short_with_argument:
                    if position == len(text) - 1:
                        index += 1
                    break
            continue
        return index
    return index


_SUDO = _Options(
    short_with_argument="CDghpRrTtUu",
    long_with_argument=frozenset(
        {
            "close-from",
            "chdir",
            "group",
            "host",
            "prompt",
            "chroot",
            "role",
            "type",
            "command-timeout",
            "other-user",
            "user",
        }
    ),
    stop_at_assignments=True,
)
_ENV = _Options(
    short_with_argument="uCPS",
    long_with_argument=frozenset(
        {"unset", "chdir", "split-string", "default-signal", "ignore-signal", "block-signal"}
    ),
    stop_at_assignments=True,
)
_NICE = _Options(short_with_argument="n", long_with_argument=frozenset({"adjustment"}))
_TIMEOUT = _Options(
    short_with_argument="ks", long_with_argument=frozenset({"kill-after", "signal"})
)
_XARGS = _Options(
    short_with_argument="adEeIiLlnPs",
    long_with_argument=frozenset(
        {
            "arg-file",
            "delimiter",
            "eof",
            "replace",
            "max-lines",
            "max-args",
            "max-procs",
            "max-chars",
            "process-slot-var",
        }
    ),
)
_EXEC = _Options(short_with_argument="a")
_TIME = _Options(short_with_argument="fo", long_with_argument=frozenset({"format", "output"}))
_DOAS = _Options(short_with_argument="uC")
_STDBUF = _Options(
    short_with_argument="ioe", long_with_argument=frozenset({"input", "output", "error"})
)
_SHELL = _Options(short_with_argument="O", long_with_argument=frozenset({"init-file", "rcfile"}))


def _after_options(options: _Options) -> Callable[[list[Word]], _Inner]:
    def wrapper(words: list[Word]) -> _Inner:
        index = _skip_options(words, 1, options)
        return _Run(words[index:]) if index < len(words) else None

    return wrapper


def _sudo(words: list[Word]) -> _Inner:
    flags = _short_flags(words[1:], _SUDO)
    if flags & set("lVvKke"):  # list, version, validate, kill timestamps, edit: no command
        return None
    index = _skip_options(words, 1, _SUDO)
    if index >= len(words):  # `sudo -i`, `sudo -s`: a shell that reads its input
        return _ReadsInput() if flags & set("si") else None
    if flags & set("si"):  # the command runs through the target user's shell
        return _Parse(words[index:])
    return _Run(words[index:])


def _short_flags(words: list[Word], options: _Options) -> set[str]:
    flags: set[str] = set()
    index = 0
    while index < len(words):
        text = words[index].text
        if not text.startswith("-") or text == "--" or not words[index].known:
            break
        if text.startswith("--"):
            index += 1 + ("=" not in text and text[2:] in options.long_with_argument)
            continue
        index += 1
        for position, letter in enumerate(text[1:], start=1):
            flags.add(letter)
            if letter in options.short_with_argument:
                index += position == len(text) - 1
                break
    return flags


def _env(words: list[Word]) -> _Inner:
    for index, word in enumerate(words[1:], start=1):
        text = word.text
        if text in ("-S", "--split-string") and index + 1 < len(words):
            return _Parse(words[index + 1 :])
        if text.startswith("--split-string="):
            return _Parse([Word.literal(text.partition("=")[2]), *words[index + 1 :]])
        if text.startswith("-S") and len(text) > 2:
            return _Parse([Word.literal(text[2:]), *words[index + 1 :]])
        if not text.startswith("-") and "=" not in text:
            break
    index = _skip_options(words, 1, _ENV)
    return _Run(words[index:]) if index < len(words) else None


def _nice(words: list[Word]) -> _Inner:
    index = 1
    if index < len(words) and re.fullmatch(r"-\d+", words[index].text):
        index += 1
    index = _skip_options(words, index, _NICE)
    return _Run(words[index:]) if index < len(words) else None


def _timeout(words: list[Word]) -> _Inner:
    index = _skip_options(words, 1, _TIMEOUT) + 1  # the duration
    return _Run(words[index:]) if index < len(words) else None


def _xargs(words: list[Word]) -> _Inner:
    """xargs appends words read from its input: an UNKNOWN word stands for them."""
    index = _skip_options(words, 1, _XARGS)
    inner = words[index:] or [Word.literal("echo")]
    return _Run([*inner, Word("...", (UNKNOWN,))])


def _command_builtin(words: list[Word]) -> _Inner:
    flags = _short_flags(words[1:], _Options())
    if flags & set("vV"):  # only describes the command
        return None
    index = _skip_options(words, 1, _Options())
    return _Run(words[index:]) if index < len(words) else None


def _eval(words: list[Word]) -> _Inner:
    return _Parse(words[1:]) if len(words) > 1 else None


def _shell_wrapper(words: list[Word]) -> _Inner:
    """`bash -c STRING` runs STRING; `bash script` runs a script we cannot see;
    `bash` or `bash -s` with input from a pipe or redirect runs that input."""
    flags = _short_flags(words[1:], _SHELL)
    index = _skip_options(words, 1, _SHELL)
    for position, word in enumerate(words[1:index], start=1):
        name, equals, value = word.text.partition("=")
        if name in ("--rcfile", "--init-file"):
            rcfile = Word.literal(value) if equals else words[min(position + 1, index - 1)]
            reason = _script_from_input(rcfile if rcfile.known or not equals else word)
            if reason is not None:
                return _Opaque(f"{words[0].text} runs a startup file it cannot read: {reason}")
    if "c" in flags:
        return _Parse(words[index : index + 1]) if index < len(words) else None
    if index >= len(words) or "s" in flags:
        return _ReadsInput()
    reason = _script_from_input(words[index])
    if reason is not None:
        return _Opaque(f"{words[0].text} runs a script the gateway cannot read: {reason}")
    return None


_SCRIPT_FROM_INPUT = re.compile(
    r"/dev/(?:stdin|fd(?:/.*)?|tcp/.*|udp/.*|tty.*|pts/.*|console)|/proc/[^/]+/fd(?:/.*)?"
    r"|/proc/[^/]+/fdinfo/.*|/proc/self/.*|/proc/thread-self/.*"
)


def _script_from_input(word: Word) -> str | None:
    """Why a script file given to `.`, `source` or a shell is really its input, or None: a
    path to standard input, a descriptor, a terminal or a socket (`/dev/stdin`, `/dev/fd/3`,
    `/proc/self/fd/0`, `/dev/tcp/h/p`), or a path only the running shell knows (`<(cmd)`,
    `$F`), which may be any of those. Spellings such as `/dev//stdin` or `/dev/./fd/0` count."""
    if not word.known:
        return f"the script {word.text!r} is only known when the shell runs it"
    path = posixpath.normpath("/" + word.text.lstrip("/")) if word.text.startswith("/") else ""
    if path and _SCRIPT_FROM_INPUT.fullmatch(path):
        return f"the script {word.text} is the command's input or a descriptor, not a file"
    return None


def _source(words: list[Word]) -> _Inner:
    """`. FILE` and `source FILE` run FILE's lines in this shell: opaque when FILE is really
    the input (`. /dev/stdin <<< "$(... | base64 -d)"`), see `_script_from_input`."""
    index = 1
    if index < len(words) and words[index].text == "--":
        index += 1
    if index >= len(words):
        return None
    reason = _script_from_input(words[index])
    return (
        _Opaque(f"{words[0].text} runs a script the gateway cannot read: {reason}")
        if (reason)
        else None
    )


def _command_string(words: list[Word], long_names: tuple[str, ...]) -> _Inner:
    """The argument of `-c` (also inside a cluster: `-lc`, `-qc'cmd'`) or of a long
    option, parsed as a shell string."""
    for index, word in enumerate(words[1:], start=1):
        text = word.text
        if text in long_names and index + 1 < len(words):
            return _Parse([words[index + 1]])
        name, equals, value = text.partition("=")
        if equals and name in long_names:
            return _Parse([Word.literal(value)])
        if text.startswith("-") and not text.startswith("--") and "c" in text[1:]:
            attached = text[text.index("c", 1) + 1 :]
            if attached:
                return _Parse([Word.literal(attached)])
            if index + 1 < len(words):
                return _Parse([words[index + 1]])
    return None


def _su(words: list[Word]) -> _Inner:
    """`su -c CMD`, `runuser -c CMD`, `sg GROUP -c CMD`: CMD runs through a shell; without
    a command they start a shell that reads its input."""
    return _command_string(words, ("--command", "--session-command")) or _ReadsInput()


def _watch(words: list[Word]) -> _Inner:
    options = _Options(
        short_with_argument="dnq", long_with_argument=frozenset({"interval", "differences"})
    )
    index = _skip_options(words, 1, options)
    return _Parse(words[index:]) if index < len(words) else None


def _find(words: list[Word]) -> _Inner:
    """`find ... -exec CMD {} ;` runs CMD per file: the first such command is analysed,
    with `{}` standing for an unknown file name."""
    for index, word in enumerate(words):
        if word.text in ("-exec", "-execdir", "-ok", "-okdir"):
            inner: list[Word] = []
            for item in words[index + 1 :]:
                if item.text in (";", "+"):
                    break
                inner.append(Word("{}", (UNKNOWN,)) if item.text == "{}" else item)
            return _Run(inner) if inner else None
    return None


def _chroot(words: list[Word]) -> _Inner:
    index = _skip_options(words, 1, _Options(long_with_argument=frozenset({"userspec", "groups"})))
    index += 1  # the new root
    return _Run(words[index:]) if index < len(words) else None


def _trap(words: list[Word]) -> _Inner:
    """`trap 'CMD' SIGNAL...` runs CMD later, when the signal (or EXIT, DEBUG) comes."""
    args = [word for word in words[1:] if word.text != "--"]
    if len(args) < 2 or args[0].text.startswith("-"):
        return None
    return _Parse([args[0]]) if args[0].text else None


def _fc(words: list[Word]) -> _Inner:
    """`fc` edits and reruns history lines; only listing (`fc -l`) is harmless."""
    if "l" in _short_flags(words[1:], _Options(short_with_argument="e")):
        return None
    return _Opaque("fc reruns lines from the shell's history, which the gateway cannot see")


_COMPLETE_WITH_ARGUMENT = frozenset("oAGWFCXPS")


def _complete(words: list[Word]) -> _Inner:
    """`complete -C CMD name` runs CMD at each Tab on `name`, `compgen -C CMD` at once."""
    index = 1
    while index < len(words) and words[index].text != "--":
        word = words[index]
        if not word.known:
            return _Opaque(f"{words[0].text} has an option only known when the shell runs it")
        if not word.text.startswith("-"):
            break
        for position, flag in enumerate(word.text[1:], start=2):
            if flag not in _COMPLETE_WITH_ARGUMENT:
                continue
            rest = word.text[position:]
            argument = Word.literal(rest) if rest else words[min(index + 1, len(words) - 1)]
            if flag == "C":
                return _Parse([argument])
            index += 0 if rest else 1
            break
        index += 1
    return None


def _busybox(words: list[Word]) -> _Inner:
    """`busybox rm -rf /`: the applet is the program."""
    return _Run(words[1:]) if len(words) > 1 else None


def _script(words: list[Word]) -> _Inner:
    """`script -c CMD [file]` runs CMD through a shell."""
    return _command_string(words, ("--command",))


_WRAPPERS: dict[str, Callable[[list[Word]], _Inner]] = {
    "busybox": _busybox,
    ".": _source,
    "source": _source,
    "toybox": _busybox,
    "script": _script,
    "runuser": _su,
    "sg": _su,
    "trap": _trap,
    "complete": _complete,
    "compgen": _complete,
    "fc": _fc,
    "sudo": _sudo,
    "doas": _after_options(_DOAS),
    "env": _env,
    "nohup": _after_options(_Options()),
    "nice": _nice,
    "ionice": _after_options(_Options(short_with_argument="cnp")),
    "timeout": _timeout,
    "xargs": _xargs,
    "exec": _after_options(_EXEC),
    "command": _command_builtin,
    "builtin": _after_options(_Options()),
    "time": _after_options(_TIME),
    "setsid": _after_options(_Options()),
    "stdbuf": _after_options(_STDBUF),
    "eval": _eval,
    "su": _su,
    "watch": _watch,
    "find": _find,
    "chroot": _chroot,
}
