"""The shell analyser: what a line would run, as the policy sees it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.policy import Action, Caller, decide_exec, decide_shell, parse_policy
from proxy.shell import (
    UNKNOWN,
    ShellAnalysis,
    Unparsable,
    analyse_line,
    analyse_paste,
    file_redirects,
    terminal_reads_commands,
)

CANARY_POLICY = parse_policy(
    {"rules": [{"name": "no-canary", "shell": "*canary*", "action": "deny"}]}, "gateway.toml"
)
ALICE = Caller("alice", frozenset({"dev"}))


def commands(line: str) -> list[str]:
    result = analyse_line(line)
    assert isinstance(result, ShellAnalysis), result
    return [command.text for command in result.commands]


def known_commands(line: str) -> list[str]:
    result = analyse_line(line)
    assert isinstance(result, ShellAnalysis), result
    return [command.text for command in result.commands if command.opaque is None]


def opaque_reasons(line: str) -> list[str]:
    result = analyse_line(line)
    assert isinstance(result, ShellAnalysis), result
    return [command.opaque for command in result.opaque if command.opaque]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("ls -la", ["ls -la"]),
        ("a; b", ["a", "b"]),
        ("a && b || c", ["a", "b", "c"]),
        ("a | b |& c", ["a", "b", "c"]),
        ("(a; b)", ["a", "b"]),
        ("{ a; b; }", ["a", "b"]),
        ("a & b", ["a", "b"]),
        ("if true; then rm x; fi", ["true", "rm x"]),
        ("while true; do rm x; done", ["true", "rm x"]),
        ("f() { rm -rf /; }; f", ["rm -rf /", "f"]),
        ("! rm x", ["rm x"]),
        ("time rm x", ["rm x"]),
        ("[[ -f x ]] && rm x", ["[ -f x ]", "rm x"]),
    ],
)
def test_every_simple_command_in_a_line_is_found(line: str, expected: list[str]) -> None:
    assert commands(line) == expected


@pytest.mark.parametrize(
    ("line", "inner"),
    [
        ("echo $(rm -rf /)", "rm -rf /"),
        ('echo "$(rm -rf /)"', "rm -rf /"),
        ("echo `rm -rf /`", "rm -rf /"),
        ("cat <(rm -rf /)", "rm -rf /"),
        ("echo a > >(rm -rf /)", "rm -rf /"),
        ("X=$(rm -rf /)", "rm -rf /"),
        ("for i in $(rm -rf /); do :; done", "rm -rf /"),
        ("echo $(echo $(rm -rf /))", "rm -rf /"),
    ],
)
def test_substitutions_are_analysed_as_commands_of_their_own(line: str, inner: str) -> None:
    assert inner in commands(line)


@pytest.mark.parametrize(
    ("line", "inner", "via"),
    [
        ("sudo rm -rf /", "rm -rf /", ("sudo",)),
        ("sudo -u root -g wheel rm -rf /", "rm -rf /", ("sudo",)),
        ("sudo -uroot rm -rf /", "rm -rf /", ("sudo",)),
        ("sudo --user=root -- rm -rf /", "rm -rf /", ("sudo",)),
        ("sudo -i rm -rf /", "rm -rf /", ("sudo",)),
        ("sudo A=1 rm -rf /", "rm -rf /", ("sudo",)),
        ("env -i A=1 B=2 rm -rf /", "rm -rf /", ("env",)),
        ("env -u HOME rm -rf /", "rm -rf /", ("env",)),
        ("env -S 'rm -rf /'", "rm -rf /", ("env",)),
        ("nohup rm -rf /", "rm -rf /", ("nohup",)),
        ("nice -n 10 rm -rf /", "rm -rf /", ("nice",)),
        ("nice -5 rm -rf /", "rm -rf /", ("nice",)),
        ("timeout -s KILL 10 rm -rf /", "rm -rf /", ("timeout",)),
        ("exec rm -rf /", "rm -rf /", ("exec",)),
        ("command rm -rf /", "rm -rf /", ("command",)),
        ("builtin eval rm -rf /", "rm -rf /", ("builtin", "eval")),
        ("bash -c 'rm -rf /'", "rm -rf /", ("bash",)),
        ('sh -c "sudo rm -rf /"', "rm -rf /", ("sh", "sudo")),
        ("zsh -xc 'rm -rf /'", "rm -rf /", ("zsh",)),
        ("bash -c 'bash -c \"rm -rf /\"'", "rm -rf /", ("bash", "bash")),
        ("eval 'rm -rf /'", "rm -rf /", ("eval",)),
        ("eval rm '-rf' /", "rm -rf /", ("eval",)),
        ("su -c 'rm -rf /' root", "rm -rf /", ("su",)),
        ("watch -n 1 rm -rf /", "rm -rf /", ("watch",)),
        ("doas -u root rm -rf /", "rm -rf /", ("doas",)),
        ("nohup nice timeout 5 sudo rm -rf /", "rm -rf /", ("nohup", "nice", "timeout", "sudo")),
        ("busybox rm -rf /", "rm -rf /", ("busybox",)),
        ("script -qc 'rm -rf /' /dev/null", "rm -rf /", ("script",)),
        ("script -q -c 'rm -rf /' /dev/null", "rm -rf /", ("script",)),
        ("runuser -u root -c 'rm -rf /'", "rm -rf /", ("runuser",)),
        ("su -lc 'rm -rf /'", "rm -rf /", ("su",)),
        ("su --command='rm -rf /'", "rm -rf /", ("su",)),
    ],
)
def test_wrappers_are_peeled(line: str, inner: str, via: tuple[str, ...]) -> None:
    result = analyse_line(line)
    assert isinstance(result, ShellAnalysis)
    found = [command for command in result.commands if command.text == inner]
    assert found, [command.text for command in result.commands]
    assert found[0].via == via


def test_xargs_and_find_exec_run_their_command_with_unknown_arguments() -> None:
    assert "rm -rf ..." in commands("echo / | xargs -0 rm -rf")
    assert "rm -rf {}" in commands("find / -exec rm -rf {} \\;")
    result = analyse_line("xargs rm")
    assert isinstance(result, ShellAnalysis)
    assert result.commands[-1].argv[-1].pieces == (UNKNOWN,)


@pytest.mark.parametrize(
    "line",
    [
        "rm -rf /",
        "r\\m -rf /",
        "'rm' -rf /",
        '"rm" -rf /',
        "r''m -rf /",
        'r""m -rf /',
        "/bin/rm -rf /",
        "/usr/bin/../bin/rm -rf /",
        "./rm -rf /",
        "$'\\x72m' -rf /",
        "$'\\162m' -rf /",
        "$'\\u0072m' -rf /",
        "$'r\\x6d' -rf /",
        '$"rm" -rf /',
        "rm '-rf' \"/\"",
        "rm -r\\f /",
        "\\rm -rf /",
        "rm    -rf     /",
    ],
)
def test_quoting_and_paths_do_not_hide_the_program(line: str) -> None:
    assert known_commands(line) == ["rm -rf /"]


@pytest.mark.parametrize(
    ("line", "reason_part"),
    [
        ("$X -rf /", "only known when the shell runs"),
        ("${X} -rf /", "only known when the shell runs"),
        ("$(echo rm) -rf /", "only known when the shell runs"),
        ("`echo rm` -rf /", "only known when the shell runs"),
        ("r* -rf /", "only known when the shell runs"),
        ("/bin/r? -rf /", "only known when the shell runs"),
        ("{rm,-rf,/}", "only known when the shell runs"),
        ("X=rm; $X -rf /", "only known when the shell runs"),
        ("alias x=rm; x -rf /", "alias defined in this input"),
        ('bash -c "$CMD"', "only known when the shell runs"),
        ("eval $CMD", "only known when the shell runs"),
        ("sudo $CMD", "only known when the shell runs"),
        ("echo rm -rf / | bash", "reads the commands to run from its input"),
        ("bash < script.sh", "reads the commands to run from its input"),
        ("sh <<< 'rm -rf /'", "reads the commands to run from its input"),
        ("echo ${X:-$(rm -rf /)}", "command substitution inside ${...}"),
        ("bash -c 'echo $((1+1))'", "cannot be analysed"),
    ],
)
def test_unknown_programs_are_opaque(line: str, reason_part: str) -> None:
    reasons = opaque_reasons(line)
    assert any(reason_part in reason for reason in reasons), reasons


@pytest.mark.parametrize(
    ("line", "reason_part"),
    [
        ("!rm", "history expansion (!rm)"),
        ("!!", "history expansion (!!)"),
        ("sudo !-2", "history expansion (!-2)"),
        ('echo "!?rm?"', "history expansion"),
        ("^echo^rm", "history expansion (^echo^rm)"),
        ("fc -s rm", "fc reruns lines"),
        ("PS1='$(rm -rf /)'", "PS1 runs a command substitution"),
        ("export PS1='`rm -rf /`'", "PS1 runs a command substitution"),
    ],
)
def test_things_that_run_later_or_from_history_are_opaque(line: str, reason_part: str) -> None:
    reasons = opaque_reasons(line)
    assert any(reason_part in reason for reason in reasons), reasons


@pytest.mark.parametrize(
    "line", ["echo 'hi!'", "echo hi!", "[ ! -f x ]", "echo $!", "ls [!a]*", 'echo "wow!"', "fc -l"]
)
def test_exclamation_marks_that_bash_does_not_expand(line: str) -> None:
    assert opaque_reasons(line) == []


def test_history_expansion_is_only_for_interactive_lines() -> None:
    result = analyse_line("echo !x", interactive=False)
    assert isinstance(result, ShellAnalysis) and not result.opaque


@pytest.mark.parametrize(
    "line",
    ["PROMPT_COMMAND='rm -rf /'", "export PROMPT_COMMAND='rm -rf /'", "trap 'rm -rf /' EXIT"],
)
def test_commands_stored_to_run_later_are_analysed(line: str) -> None:
    assert "rm -rf /" in known_commands(line)


def test_an_alias_defined_in_the_line_is_also_analysed_as_what_it_stands_for() -> None:
    assert "rm -rf /" in known_commands("alias x='rm -rf'; x /")


def test_unknown_arguments_keep_the_program_known() -> None:
    result = analyse_line('rm -rf "$DIR"/*')
    assert isinstance(result, ShellAnalysis)
    (command,) = result.commands
    assert command.opaque is None
    assert command.text == "rm -rf $DIR/*"
    assert command.subject() == ("rm", " ", "-rf", " ", UNKNOWN, "/", UNKNOWN)


def test_a_directory_that_is_unknown_still_names_the_program() -> None:
    assert known_commands("$HOME/bin/rm -rf /") == ["rm -rf /"]


def test_quoted_globs_and_braces_are_literal() -> None:
    result = analyse_line("echo '*' \"{a,b}\" \\?")
    assert isinstance(result, ShellAnalysis)
    assert result.commands[0].subject() == ("echo", " ", "*", " ", "{a,b}", " ", "?")


def test_command_v_only_looks_a_program_up() -> None:
    assert commands("command -v rm") == ["command -v rm"]


@pytest.mark.parametrize(
    ("line", "incomplete"),
    [
        ("echo 'open", True),
        ("if true; then", True),
        ("ls |", True),
        ("echo `ls", True),
        ("echo $((1 + 2))", False),
        ("case x in a) rm y;; esac", False),
        ("rm x;; y", False),
        ("a=(1 2)", False),
    ],
)
def test_lines_the_parser_cannot_read_are_unparsable(line: str, incomplete: bool) -> None:
    result = analyse_line(line)
    assert isinstance(result, Unparsable)
    assert result.reason
    assert result.incomplete is incomplete


def test_blank_lines_and_comments_run_nothing() -> None:
    for line in ("", "   ", "# rm -rf /", "  # comment"):
        result = analyse_line(line)
        assert isinstance(result, ShellAnalysis) and result.commands == ()


def test_comments_after_a_command_are_not_commands() -> None:
    assert commands("ls # ; rm -rf /") == ["ls"]


def test_nesting_too_deep_is_opaque_not_a_crash() -> None:
    result = analyse_line("eval " * 12 + "rm -rf /")
    assert isinstance(result, ShellAnalysis)
    assert result.opaque, "a string nested too deep must not be allowed unseen"


def test_a_brace_without_its_end_cannot_hang_the_parser() -> None:
    """bashlex 0.18 loops forever on this; the gateway must answer instead."""
    result = analyse_line("?'m-2\"|] ${['];;(}~")
    assert isinstance(result, Unparsable) and "no closing" in result.reason


def test_a_huge_line_is_unparsable() -> None:
    result = analyse_line("echo " + "a" * 20000)
    assert isinstance(result, Unparsable)


# ----------------------------------------------------------------------------- pastes


def paste_lines(text: str) -> list[list[str] | str]:
    out: list[list[str] | str] = []
    for result in analyse_paste(text):
        if isinstance(result, Unparsable):
            out.append("UNPARSABLE")
        else:
            out.append([command.text for command in result.commands])
    return out


def test_a_paste_is_judged_line_by_line() -> None:
    assert paste_lines("ls\nrm -rf /\r\nwhoami\r") == [["ls"], ["rm -rf /"], ["whoami"]]


def test_line_continuations_join_lines() -> None:
    assert paste_lines("rm \\\n  -rf \\\n  /\nls") == [["rm -rf /"], ["ls"]]


def test_here_document_bodies_are_data_not_commands() -> None:
    text = "cat > f <<'EOF'\nrm -rf /\nEOF\ncat <<EOF\nrm -rf /\nEOF\nls"
    assert paste_lines(text) == [["cat > f"], ["cat"], ["ls"]]


def test_an_expanded_here_document_with_a_substitution_is_opaque() -> None:
    (result,) = analyse_paste("cat <<EOF\n$(rm -rf /)\nEOF")
    assert isinstance(result, ShellAnalysis)
    assert result.opaque and "here-document" in (result.opaque[0].opaque or "")


def test_a_shell_fed_by_a_here_document_is_opaque() -> None:
    (result,) = analyse_paste("bash <<EOF\nrm -rf /\nEOF")
    assert isinstance(result, ShellAnalysis)
    assert result.opaque


def test_compound_commands_and_quotes_span_lines() -> None:
    text = "for f in a b; do\n  rm -rf $f\ndone\necho 'one\nrm -rf /'\nls"
    assert paste_lines(text) == [["rm -rf $f"], ["echo one\nrm -rf /"], ["ls"]]


def test_a_quote_that_looks_like_a_here_document_does_not_hide_lines() -> None:
    assert paste_lines('echo "<<EOF"\nrm -rf /\nEOF') == [["echo <<EOF"], ["rm -rf /"], ["EOF"]]


def test_an_alias_defined_on_one_line_is_known_on_the_next() -> None:
    results = analyse_paste("alias x='rm -rf'\nx /")
    assert isinstance(results[1], ShellAnalysis)
    texts = [command.text for command in results[1].commands]
    assert "rm -rf /" in texts


def test_a_paste_that_ends_inside_a_quote_is_unparsable_and_incomplete() -> None:
    (result,) = analyse_paste("echo 'never closed\nrm -rf /")
    assert isinstance(result, Unparsable) and result.incomplete


# ----------------------------------------------------------------------------- properties

_WORD_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    min_size=1,
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(_WORD_TEXT)
def test_single_quoting_gives_back_the_text(text: str) -> None:
    quoted = "'" + text.replace("'", "'\\''") + "'"
    result = analyse_line("echo " + quoted)
    assert isinstance(result, ShellAnalysis)
    (command,) = result.commands
    assert command.argv[1].text == text and command.argv[1].known


@settings(max_examples=300, deadline=None)
@given(_WORD_TEXT)
def test_ansi_c_hex_quoting_gives_back_the_text(text: str) -> None:
    encoded = "".join(f"\\U{ord(char):08x}" for char in text)
    result = analyse_line(f"echo $'{encoded}'")
    assert isinstance(result, ShellAnalysis)
    assert result.commands[0].argv[1].text == text


# ----------------------------------------------------------------------------- never raises


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=200))
def test_analyse_line_never_raises(text: str) -> None:
    result = analyse_line(text)
    assert isinstance(result, ShellAnalysis | Unparsable)


_SHELLISH = st.text(
    alphabet=st.sampled_from(list("abrm -;&|()`$'\"\\{}<>*?[]~=#\n\t!xc0123")), max_size=80
)


@settings(max_examples=600, deadline=None)
@given(_SHELLISH)
def test_analyse_line_never_raises_on_shell_like_text(text: str) -> None:
    result = analyse_line(text)
    assert isinstance(result, ShellAnalysis | Unparsable)


@settings(max_examples=200, deadline=None)
@given(_SHELLISH)
def test_analyse_paste_never_raises(text: str) -> None:
    for result in analyse_paste(text):
        assert isinstance(result, ShellAnalysis | Unparsable)


_plain_words = st.from_regex(r"[A-Za-z0-9_./:,+@%=-]{1,12}", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(
    first=st.from_regex(r"[A-Za-z0-9_./:,+@%-]{1,12}", fullmatch=True),
    rest=st.lists(_plain_words, max_size=6),
    gaps=st.lists(st.sampled_from([" ", "  ", "\t", " \t"]), min_size=8, max_size=8),
)
def test_the_plain_line_shortcut_builds_what_bashlex_builds(first, rest, gaps):
    """Lines of plain words skip bashlex; the tree must be the one bashlex would build."""
    import bashlex

    from proxy.shell import _plain_command

    line = gaps[0] + first + "".join(g + w for g, w in zip(gaps[1:], rest, strict=False)) + gaps[-1]
    fast = _plain_command(line)
    if fast is None:  # a reserved word in command position takes the long way
        return
    assert [tree.dump() for tree in fast] == [tree.dump() for tree in bashlex.parse(line)]


@pytest.mark.parametrize(
    ("command", "shell"),
    [
        ("bash", True),
        ("exec sh", True),
        ("env bash --norc", True),
        ("sudo -i", True),
        ("su -", True),
        ("ls; bash", True),
        ("$SHELL", True),  # unknown program: fail closed
        ("echo 'unterminated", True),  # does not parse: fail closed
        ("script -q /dev/null", True),  # a shell in disguise
        ("rbash", True),
        ("/tmp/bash-copy", True),  # a renamed bash: not a known non-shell
        ("python3 -q", True),  # a REPL reads commands too
        ("psql appdb", True),
        ("less /etc/hosts", True),  # `!cmd` runs a command
        ("top", False),
        ("sudo top", False),
        ("tail -f /var/log/syslog", False),
        ("bash -c 'ls -la'", False),
        ("stty raw -echo; exec cat", False),
    ],
)
def test_a_terminal_exec_is_gated_unless_its_program_is_known_not_to_read_commands(
    command: str, shell: bool
) -> None:
    assert terminal_reads_commands(command) is shell


# -- redirects: rules see the files a line opens (issue 12, class 6) --------------------------


@pytest.mark.parametrize(
    "line",
    [
        "cat < /tmp/x-canary",
        "exec 3</tmp/x-c''anary; cat <&3",
        ": > /tmp/x-canary",
        "> /tmp/x-canary",
        "echo hi >> /tmp/x-can\\ary",
        "echo hi &> /tmp/x-canary",
        "echo hi >& /tmp/x-canary",
        "echo hi >| /tmp/x-canary",
        "cat <> /tmp/x-canary",
        "X=1 < /tmp/x-canary",
        "{ cat; } < /tmp/x-canary",
        "while read -r l; do echo $l; done < /tmp/x-canary",
        "sudo tee /dev/null < /tmp/x-canary",
        "cat < /tmp/$'x-\\x63anary'",
    ],
)
def test_a_deny_rule_sees_redirect_targets(line: str) -> None:
    assert decide_shell(CANARY_POLICY, ALICE, "t1", line).action is Action.DENY
    assert decide_exec(CANARY_POLICY, ALICE, "t1", line).action is Action.DENY


def test_redirects_are_listed_as_operations_on_paths() -> None:
    line = "cat < in 2>&1 > out >> log <> both &> all 3<&- <<< text; { ls; } 2> err"
    found = [(operation, word.text) for operation, word in file_redirects(analyse_line(line))]
    assert found == [
        ("read", "in"),
        ("write", "out"),
        ("append", "log"),
        ("readwrite", "both"),
        ("write", "all"),
        ("write", "err"),
    ]
    ((_, unknown),) = file_redirects(analyse_line("cat > $HOME/x"))
    assert not unknown.known and unknown.pieces[0] is UNKNOWN
    assert file_redirects(analyse_line("echo 'unterminated")) == []


def test_descriptor_duplication_is_not_a_file() -> None:
    assert file_redirects(analyse_line("ls 2>&1 >&2 <&0 3>&-")) == []
    assert decide_shell(CANARY_POLICY, ALICE, "t1", "ls 2>&1").action is Action.ALLOW


# -- scripts fed through a file argument (class 7) ----------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        '. /dev/stdin <<< "$(echo cm0gL3RtcC94 | base64 -d)"',
        "source /dev/stdin",
        "source /dev//stdin",
        ". /dev/./fd/0",
        ". /proc/self/fd/0",
        ". /proc/$$/fd/0",
        "bash /dev/stdin <<< x",
        "sh /dev/fd/3 3<<< x",
        "bash <(echo x)",
        ". <(echo x)",
        "source /dev/tcp/127.0.0.1/9",
        "sudo bash /dev/stdin",
        "rbash /dev/stdin",
        "bash -- /dev/stdin",
    ],
)
def test_a_shell_reading_its_script_from_its_input_is_opaque(line: str) -> None:
    assert any("script" in reason for reason in opaque_reasons(line)), analyse_line(line)


def test_a_script_file_stays_a_plain_command() -> None:
    assert opaque_reasons(". ./env.sh") == []
    assert opaque_reasons("bash deploy.sh") == []


# -- arithmetic evaluation runs `$(...)` hidden in a value (class 8) ----------------------------


@pytest.mark.parametrize(
    "line",
    [
        "[[ x -eq 0 ]]",
        "[[ $x -ge 1 ]]",
        'test "$x" -eq 0',
        "[ x -lt 2 ]",
        "let x",
        "let y=x+1",
        "declare -i y=x",
        "typeset -i n",
        "declare -n ref=$x",
        'declare "$x=1"',
        "((x))",
        "((y = x + 1))",
        "echo ${a[x]}",
        "echo ${#a[i]}",
        "echo ${s:i}",
        "echo ${s:0:n}",
        "echo ${!x}",
        "read -r 'a[$(id)]' <<< 1",
        "printf -v 'a[$(id)]' 1",
        "[[ -v 'a[$(id)]' ]]",
        "[[ -v $x ]]",
        "mapfile -t 'a[$(id)]' < /dev/null",
    ],
)
def test_arithmetic_fed_by_anything_not_literal_is_opaque(line: str) -> None:
    result = analyse_line(line)
    if isinstance(result, Unparsable):
        return  # also held: `$(( ))` and `for ((;;))` do not parse
    assert result.opaque, result


@pytest.mark.parametrize(
    "line",
    [
        "[[ 1 -eq 0 ]]",
        "[ $# -eq 0 ]",
        "[ ${#x} -gt 3 ]",
        "let 1+2",
        "((1 + 0x1f))",
        "echo ${a[0]} ${a[@]} ${#a[*]} ${s:1:2} ${x:-default} ${!prefix*}",
        "read -r line",
        "printf -v out '%s' hi",
        "export PATH=$PATH:/opt/bin",
        "declare -a list",
    ],
)
def test_literal_arithmetic_is_plain(line: str) -> None:
    assert opaque_reasons(line) == []


# -- ways around the above, found after the fixes ---------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "BASH_ENV=/dev/stdin bash -c true",
        "export BASH_ENV=<(echo x)",
        "ENV=/dev/fd/3 sh -i",
        "bash --rcfile <(echo cm0gL3RtcC94 | base64 -d)",
        "bash --init-file=/dev/stdin",
        "builtin . /dev/stdin",
        "command source /dev/stdin",
        'cat <<< "${a[x]}"',
        "cat <<EOF\n$[x]\nEOF",
        "cat <<EOF\n${a[i]}\nEOF",
    ],
)
def test_startup_files_here_strings_and_here_documents_do_not_hide_a_script(line: str) -> None:
    assert opaque_reasons(line), analyse_line(line)


@pytest.mark.parametrize(
    "command",
    ["/tmp/top", "./tail -f x", "PATH=/tmp:$PATH top", "env PATH=/tmp top", "/tmp/evil/sudo top"],
)
def test_a_known_non_shell_by_an_unusual_path_is_gated(command: str) -> None:
    assert terminal_reads_commands(command)
    assert not terminal_reads_commands("/usr/bin/top")


@pytest.mark.parametrize(
    "command",
    [
        "/usr/bin/../../tmp/top",  # leaves the system directory
        "/bin/./../tmp/d/top",
        "LD_PRELOAD=/tmp/x.so top",  # the caller's environment loads the caller's code
        "env LD_PRELOAD=/tmp/x.so top",
        "env top",
        "sudo PAGER=x top",
        "bash -c 'X=y top'",
        "x=1; top",  # may set a variable that is already exported
        "printf -v PAGER bash; top",
        "dmesg -H",  # pages through less: `!cmd`
        "sort --compress-program=bash data",  # the data is the program's input
        "ip netns exec n bash",
        "rg --pre bash x",
    ],
)
def test_a_known_non_shell_made_to_run_something_else_is_gated(command: str) -> None:
    assert terminal_reads_commands(command)


@pytest.mark.parametrize(
    ("line", "hidden"),
    [
        ("declare -a 'x=($(rm f))'", True),  # bash parses the quoted list again
        ("declare -A 'h=([$(rm f)]=1)'", True),
        ("readonly -a 'x=(`rm f`)'", True),
        ("declare -a 'x=([y]=1)'", True),  # y's value meets arithmetic evaluation
        ("local -a 'x+=([$y]=1)'", True),
        ("declare -a 'x=(a b c)'", False),
        ("declare -a 'x=([0]=a [1]=b)'", False),
        ("declare x=1", False),
    ],
)
def test_a_quoted_list_assignment_to_a_declaration_is_opaque_unless_literal(
    line: str, hidden: bool
) -> None:
    assert bool(opaque_reasons(line)) is hidden, analyse_line(line)


@pytest.mark.parametrize(
    "line",
    [
        "read -r PS4 < p",
        "IFS=: read a PS4 <<< x",
        "read -a PS1",
        "mapfile -t PROMPT_COMMAND < p",
        "printf -v PS4 %b '\\x24(id)'",
        "getopts x: BASH_ENV",
        "for PS4 in a; do :; done",
    ],
)
def test_a_code_variable_set_by_name_is_opaque(line: str) -> None:
    assert opaque_reasons(line), analyse_line(line)


def test_other_variables_set_by_name_are_not() -> None:
    for line in ("read -r x < p", "for i in a; do :; done", "printf -v y %s x"):
        assert not opaque_reasons(line), line


@pytest.mark.parametrize(
    "line",
    ["hash -p /bin/rm ls", "hash -p/bin/rm ls", "BASH_CMDS[ls]=/bin/rm", "PS4[0]='$(id)'"],
)
def test_a_command_table_or_code_variable_element_is_opaque(line: str) -> None:
    assert opaque_reasons(line), analyse_line(line)
    assert not opaque_reasons("hash -r")
