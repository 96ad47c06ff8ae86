"""A rule names people and groups in any spelling: `users = ["Carol"]` is the directory's
`carol`, as she logs in (issue 20). Through a real client, psycopg, against slapd."""

from __future__ import annotations

import psycopg
import pytest

from tests.fixtures.gateway import toml_table
from tests.fixtures.slapd import GROUP_BASE, USER_DN, Slapd
from tests.proxy.pg.harness import PgHarness


async def test_a_rule_naming_a_person_in_another_spelling_applies_to_them(
    pg: PgHarness, slapd: Slapd
) -> None:
    pg.extra_toml = toml_table(
        "[ldap]", {"url": slapd.url, "user_dn": USER_DN, "group_base": GROUP_BASE}
    )
    pg.rules = [
        {"name": "carol-reads-only", "users": ["Carol "], "sql": ["write"], "action": "deny"}
    ]
    await pg.start()
    dsn = pg.dsn(user="carol", sslmode="require", password="carol-pw")
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="carol-reads-only"):
            await conn.execute("insert into hoop_guarded values (1)")
