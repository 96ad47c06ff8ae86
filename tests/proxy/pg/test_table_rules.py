"""`[[rules]] tables = [...]`: SQL rules limited to the tables a statement names."""

from __future__ import annotations

import psycopg
import pytest

from proxy.config import ConfigError
from proxy.pg.classify import classify
from proxy.policy import Action, Caller, decide_exec, decide_sql, parse_policy
from tests.proxy.pg.harness import PgHarness

ALICE = Caller("alice", frozenset({"dev"}))
DIRECT = "host=127.0.0.1 port=5432 user=root dbname=test"


def verdict(rules: list[dict[str, object]], sql: str) -> str:
    policy = parse_policy({"rules": rules}, "test.toml")
    (statement,) = classify(sql).statements
    found = decide_sql(policy, ALICE, "db", statement.classes, statement.text, statement.tables)
    return f"{found.action.value}:{found.rule}"


DENY_PAYMENT_WRITES = {
    "name": "payments",
    "sql": ["write"],
    "tables": ["payments", "public.users*"],
    "action": "deny",
}


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("insert into payments values (1)", "deny:payments"),
        ("insert into billing.payments values (1)", "deny:payments"),  # no schema: any
        ("update public.users_old set a = 1 where id = 2", "deny:payments"),
        ("update users set a = 1 where id = 2", "deny:payments"),  # may be public.users
        ("update other.users set a = 1 where id = 2", "allow:None"),
        ("insert into audit select * from PAYMENTS", "deny:payments"),  # reads count too
        ("select * from payments", "allow:None"),  # not a write
        ("insert into orders values (1)", "allow:None"),
        ("with x as (delete from payments returning *) select * from x", "deny:payments"),
    ],
)
def test_restricting_rules_match_any_named_table(sql: str, expected: str) -> None:
    assert verdict([DENY_PAYMENT_WRITES], sql) == expected


def test_allow_rules_need_every_table_and_a_schema_when_they_name_one() -> None:
    rules = [
        {"name": "scratch", "sql": ["write", "ddl"], "tables": ["scratch.*"], "action": "allow"},
        {"name": "no-writes", "sql": ["write", "ddl"], "action": "deny"},
    ]
    assert verdict(rules, "insert into scratch.t values (1)") == "allow:scratch"
    assert verdict(rules, "create table scratch.t2 as select 1") == "allow:scratch"
    assert verdict(rules, "insert into payments select * from scratch.t") == "deny:no-writes"
    assert verdict(rules, "insert into t values (1)") == "deny:no-writes"  # which schema?
    # a table named "scratch.x" is not x in schema scratch
    assert verdict(rules, 'insert into "scratch.x" values (1)') == "deny:no-writes"
    deny_scratch = [{"name": "s", "sql": ["write"], "tables": ["scratch.*"], "action": "deny"}]
    assert verdict(deny_scratch, 'insert into "scratch.x" values (1)') == "deny:s"  # either way
    # A rule with tables alone: any statement naming them.
    assert verdict([{"name": "p", "tables": ["payments"], "action": "deny"}], "select 1") == (
        "allow:None"
    )
    assert verdict(
        [{"name": "p", "tables": ["payments"], "action": "deny"}], "select * from payments"
    ) == ("deny:p")


def test_table_rules_never_apply_to_shell_and_do_not_mix_with_it() -> None:
    policy = parse_policy({"rules": [{"name": "p", "tables": ["x"], "action": "deny"}]}, "t")
    assert decide_exec(policy, ALICE, "web", "rm -rf x").action is Action.ALLOW
    with pytest.raises(ConfigError) as caught:
        parse_policy(
            {"rules": [{"name": "p", "shell": "rm *", "tables": ["x"], "action": "deny"}]}, "t"
        )
    assert caught.value.key == "rules #1 (p).tables"


async def test_through_the_gateway(pg: PgHarness) -> None:
    async with await psycopg.AsyncConnection.connect(DIRECT, autocommit=True) as conn:
        await conn.execute("create table if not exists hoop_payments (a int)")
        await conn.execute("create table if not exists hoop_orders (a int)")
    pg.rules = [
        {
            "name": "payments-read-only",
            "sql": ["write"],
            "tables": ["hoop_payments"],
            "action": "deny",
            "message": "payments change through the billing service",
        }
    ]
    await pg.start()
    async with await psycopg.AsyncConnection.connect(pg.dsn(), autocommit=True) as conn:
        await conn.execute("insert into hoop_orders values (1)")
        await conn.execute("select count(*) from hoop_payments")
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as caught:
            await conn.execute("delete from public.hoop_payments where a = %s", (1,))
        assert "billing service" in str(caught.value)
        # The same shape on another table is not confused with it by the verdict cache.
        await conn.execute("delete from public.hoop_orders where a = %s", (1,))


async def test_a_rule_on_one_partition_is_not_bypassed_through_another(pg: PgHarness) -> None:
    """pg_query's fingerprint leaves out the digits of a table's name (`pay_2023` and
    `pay_2024` share one): a statement on the allowed partition must not lend its verdict,
    through the classifier's caches, to the same statement on the denied one."""
    async with await psycopg.AsyncConnection.connect(DIRECT, autocommit=True) as conn:
        for table in ("hoop_pay", "hoop_pay_2023", "hoop_pay_2024", "hoop_pay11"):
            await conn.execute(f"create table if not exists {table} (a int)")
    pg.rules = [{"name": "closed", "tables": ["hoop_pay_2024", "hoop_pay11"], "action": "deny"}]
    await pg.start()
    async with await psycopg.AsyncConnection.connect(pg.dsn(), autocommit=True) as conn:
        for _ in range(2):  # the second time, every cache has seen the allowed ones
            for allowed, denied in (("hoop_pay_2023", "hoop_pay_2024"), ("hoop_pay", "hoop_pay11")):
                await conn.execute(f"select count(*) from {allowed} where a = 1")
                with pytest.raises(psycopg.errors.InsufficientPrivilege, match="closed"):
                    await conn.execute(f"select count(*) from {denied} where a = 2")


async def test_policy_check_agrees_with_the_gateway(pg: PgHarness, capsys) -> None:
    """`hoop-tui policy check --sql` on the gateway's own config gives the verdict psql meets."""
    from hoop_tui.cli import main

    async with await psycopg.AsyncConnection.connect(DIRECT, autocommit=True) as conn:
        await conn.execute("create table if not exists hoop_payments (a int)")
        await conn.execute("create table if not exists hoop_orders (a int)")
    pg.rules = [
        {"name": "payments", "sql": ["write"], "tables": ["hoop_payments"], "action": "deny"},
        {"name": "scratch", "sql": ["ddl"], "tables": ["pg_temp.*"], "action": "allow"},
        {"name": "no-ddl", "sql": ["ddl"], "action": "deny"},
    ]
    await pg.start()
    config = str(pg.directory / "gateway.toml")
    statements = [
        "delete from hoop_payments where a = 1",
        "insert into hoop_orders select a from public.hoop_payments",
        "with x as (delete from hoop_payments returning a) select count(*) from x",
        "delete from hoop_orders where a = 1",
        "select count(*) from hoop_payments",
        "create table hoop_never (a int)",
        "prepare p as delete from hoop_payments where a = $1; execute p(1)",
    ]
    for database in ("test", "readonly"):
        for sql in statements:
            base = ["policy", "check", "--config", config, "--target", database]
            status = main([*base, "--user", "alice", "--sql", sql])
            printed = capsys.readouterr().out
            ran = await pg.psql("-c", sql, database=database)
            assert status in (0, 4), printed
            if status == 4:
                rule = printed.split("rule:", 1)[1].split()[0]
                assert "ERROR:  hoop:" in ran.err, (database, sql, printed, ran.err)
                assert rule in ran.err or rule == "(none:", (rule, ran.err)
            else:
                assert ran.status == 0 and not ran.err, (database, sql, printed, ran.err)
