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


SQL_CONFIG = """
[gateway]
data_dir = "data"

[[users]]
name = "alice"
groups = ["dev"]

[[targets]]
name = "appdb"
protocol = "postgres"
host = "127.0.0.1"
database = "app"
user = "hoop_gateway"
groups = ["dev"]

[[targets]]
name = "reports"
protocol = "postgres"
host = "127.0.0.1"
user = "hoop_gateway"
read_only = true
groups = ["dev"]

[[rules]]
name = "payments-writes"
sql = ["write"]
tables = ["payments", "public.users*"]
action = "deny"
message = "payments change through the billing service"

[[rules]]
name = "no-truncate"
sql = ["truncate"]
action = "deny"
"""


def sql_check(tmp_path: Path, sql: str, *extra: str, target: str = "appdb") -> int:
    path = tmp_path / "gateway.toml"
    if not path.exists():
        path.write_text(SQL_CONFIG)
    base = ["policy", "check", "--config", str(path), "--target", target, "--user", "alice"]
    return main([*base, "--sql", sql, *extra])


@pytest.mark.parametrize(
    ("sql", "status"),
    [
        ("delete from payments where id = 1", 4),
        ("update public.users_old set a = 1 where id = 2", 4),
        ("insert into audit select * from billing.PAYMENTS", 4),  # a table read counts too
        ("with x as (delete from payments returning *) select * from x", 4),
        ("delete from orders where id = 1", 0),
        ("select * from payments", 0),  # not a write
        ("select 1; delete from payments where id = 1", 4),  # each statement is judged
        # EXECUTE is judged by the body the same string PREPAREs under its name.
        ("prepare p as delete from payments where id = $1; execute p(1)", 4),
        ("execute never_prepared", 4),  # a name the gateway never saw prepared: refused
    ],
)
def test_sql_is_judged_with_the_classes_and_tables_of_the_real_parser(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sql: str, status: int
) -> None:
    assert sql_check(tmp_path, sql) == status, capsys.readouterr().out


def test_sql_output_names_the_rule_classes_and_tables(tmp_path: Path, capsys) -> None:
    assert sql_check(tmp_path, "DELETE FROM public.payments WHERE id = 7") == 4
    out = capsys.readouterr().out
    assert "rule:     payments-writes (rule #1)" in out
    assert "message:  payments change through the billing service" in out
    assert "sql:      DELETE FROM public.payments WHERE id = 7" in out
    assert "classes: write; tables: public.payments" in out
    assert sql_check(tmp_path, "delete from payments where id = 1", "--json") == 4
    data = json.loads(capsys.readouterr().out)
    assert (data["action"], data["rule"]) == ("deny", "payments-writes")
    assert data["statements"] == [
        {
            "text": "delete from payments where id = 1",
            "classes": ["write"],
            "tables": ["payments"],
        }
    ]
    assert data["parse_error"] is None


def test_sql_on_a_read_only_target_and_classes_alone(tmp_path: Path, capsys) -> None:
    assert sql_check(tmp_path, "insert into orders values (1)", target="reports") == 4
    assert "rule:     read-only-target" in capsys.readouterr().out
    assert sql_check(tmp_path, "select * from orders", target="reports") == 0
    capsys.readouterr()
    # Classes alone cannot meet a rule limited to tables, and the output says so.
    path = tmp_path / "gateway.toml"
    base = ["policy", "check", "--config", str(path), "--target", "appdb", "--user", "alice"]
    assert main([*base, "--sql-class", "write"]) == 0
    assert "rules limited to tables (payments-writes)" in capsys.readouterr().out
    assert main([*base, "--sql-class", "truncate"]) == 4


def test_unparsable_sql_follows_the_postgres_setting(tmp_path: Path, capsys) -> None:
    assert sql_check(tmp_path, "selec 1") == 3  # [policy] unparsable = review (the default)
    assert "parser:" in capsys.readouterr().out
    path = tmp_path / "gateway.toml"
    path.write_text(SQL_CONFIG + '\n[postgres]\nunparsable = "syntax_error"\n')
    assert sql_check(tmp_path, "selec 1") == 4
    assert "syntax error (42601, nothing is sent)" in capsys.readouterr().out
