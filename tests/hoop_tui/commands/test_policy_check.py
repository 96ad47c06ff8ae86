"""`hoop-tui policy check`: the verdict and the rule, from the gateway's own config file."""

from __future__ import annotations

import json
from pathlib import Path

import asyncssh
import pytest

from hoop_tui.cli import main

RULES = """
[policy]
approvers = ["oncall"]

[[rules]]
name = "no-recursive-delete"
shell = "rm -rf *"
action = "deny"
message = "recursive delete is not allowed"

[[rules]]
name = "restarts-need-review"
shell = "systemctl restart *"
action = "review"
approvers = ["oncall"]
approvals = 2
timeout = "15m"
"""


@pytest.fixture(scope="module")
def host_key() -> str:
    key = asyncssh.generate_private_key("ssh-ed25519")
    return key.export_public_key().decode().strip()


def write_config(tmp_path: Path, host_key: str, rules: str = RULES) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(
        f"""
[gateway]
data_dir = "{tmp_path / "data"}"

[[users]]
name = "alice"
authorized_keys = ["{host_key}"]
groups = ["dev"]

[[targets]]
name = "web1"
protocol = "ssh"
host = "127.0.0.1"
port = 22
user = "deploy"
password_env = "WEB1_PASSWORD"
host_key = "{host_key}"
groups = ["dev"]
jit = true
{rules}
"""
    )
    return path


def check(path: Path, *args: str) -> int:
    return main(["policy", "check", "--config", str(path), "--target", "web1", *args])


def test_a_denied_command_prints_the_rule_and_exits_4(tmp_path, host_key, capsys):
    path = write_config(tmp_path, host_key)
    status = check(path, "--user", "alice", "--command", "rm -rf /var/lib")
    out = capsys.readouterr().out
    assert status == 4
    assert "verdict:  deny" in out
    assert "rule:     no-recursive-delete (rule #1)" in out
    assert "message:  recursive delete is not allowed" in out
    assert "web1 requires just-in-time access" in out


def test_a_held_command_shows_who_approves(tmp_path, host_key, capsys):
    path = write_config(tmp_path, host_key)
    status = check(path, "--user", "alice", "--command", "cd / && sudo systemctl restart nginx")
    out = capsys.readouterr().out
    assert status == 3
    assert "command:  systemctl restart nginx" in out
    assert "review:   2 approval(s) from oncall, expires after 900s" in out


def test_json_output_and_allow(tmp_path, host_key, capsys):
    path = write_config(tmp_path, host_key)
    assert check(path, "--user", "alice", "--command", "ls -la", "--json") == 0
    result = json.loads(capsys.readouterr().out)
    assert result["action"] == "allow" and result["rule"] is None
    assert result["groups"] == ["dev"]


def test_groups_come_from_users_and_flags(tmp_path, host_key, capsys):
    rules = RULES.replace(
        '[[rules]]\nname = "no-recursive-delete"',
        '[[rules]]\nname = "oncall-may"\ngroups = ["oncall"]\nshell = "rm -rf /tmp/*"\n'
        'action = "allow"\n\n[[rules]]\nname = "no-recursive-delete"',
    )
    path = write_config(tmp_path, host_key, rules)
    assert check(path, "--user", "alice", "--command", "rm -rf /tmp/x") == 4
    assert check(path, "--user", "alice", "--group", "oncall", "--command", "rm -rf /tmp/x") == 0


def test_exec_and_sql(tmp_path, host_key, capsys):
    rules = RULES + '\n[[rules]]\nname = "ddl"\nsql = ["ddl"]\naction = "deny"\n'
    path = write_config(tmp_path, host_key, rules)
    assert check(path, "--user", "alice", "--exec", "uname -a; rm -rf /") == 4
    assert check(path, "--user", "alice", "--sql-class", "ddl") == 4
    assert check(path, "--user", "alice", "--sql-class", "read") == 0


def test_a_rule_error_is_one_line_naming_file_rule_and_key(tmp_path, host_key, capsys):
    path = write_config(tmp_path, host_key, RULES.replace('action = "deny"', 'action = "nope"'))
    assert check(path, "--user", "alice", "--command", "ls") == 1
    err = capsys.readouterr().err
    assert err.strip() == (
        f"hoop-tui: {path}: rules #1 (no-recursive-delete).action: "
        '\'nope\' is not an action: say "allow", "deny" or "review"'
    )
