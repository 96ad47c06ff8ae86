"""The `hoop-tui` command line as a fresh install runs it: nothing on stderr but its own words."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.programs


def hoop_quiet_env() -> dict[str, str]:
    """The environment a user has: no PYTHONWARNINGS that could hide or add warnings."""
    env = dict(os.environ)
    env.pop("PYTHONWARNINGS", None)
    return env


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["gateway", "--help"],
        ["sessions", "--data-dir", "{tmp}", "--json"],
        ["policy", "--help"],
    ],
    ids=["help", "gateway-help", "sessions", "policy-help"],
)
def test_commands_print_nothing_on_stderr(tmp_path, args):
    argv = [arg.replace("{tmp}", str(tmp_path / "data")) for arg in args]
    result = subprocess.run(
        [sys.executable, "-m", "hoop_tui", *argv],
        capture_output=True,
        text=True,
        env=hoop_quiet_env(),
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert result.stderr == ""


def test_only_the_dsa_warning_is_filtered():
    """A warning from asyncssh other than the DSA one, or DSA from elsewhere, still shows."""
    code = (
        "import warnings, hoop_tui\n"
        "from cryptography.utils import CryptographyDeprecationWarning as W\n"
        "warnings.warn_explicit('DSA is deprecated', W, 'x.py', 1, module='elsewhere')\n"
        "warnings.warn_explicit('something new', W, 'x.py', 1, module='asyncssh.crypto.dsa')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=hoop_quiet_env()
    )
    assert result.returncode == 0, result.stderr
    assert "DSA is deprecated" in result.stderr
    assert "something new" in result.stderr


def test_every_subcommand_has_a_description_and_examples_that_parse():
    """`--help` of a subcommand says what it does and shows how it is used (issue 17, 12); an
    example that no longer parses is caught here, not by a reader."""
    import argparse
    import shlex

    from hoop_tui.cli import build_parser

    parser = build_parser()
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name, sub in subparsers.choices.items():
        assert sub.description, f"{name} --help has no description"
        assert sub.epilog and sub.epilog.startswith("examples:"), f"{name} has no examples"
        for line in sub.epilog.splitlines()[1:]:
            pipeline = line.split("#")[0].split("|")
            command = next(part for part in pipeline if "hoop-tui" in part)
            words = shlex.split(command)
            assert words[:2] == ["hoop-tui", name], line
            try:
                build_parser().parse_args(words[1:])
            except SystemExit as exc:
                raise AssertionError(f"example does not parse: {line}") from exc
