"""One person, one identity over PostgreSQL: a directory user is named as the directory stores
them whatever spelling the client sends, so rules for that person apply and the recording says
who it was (issue 20)."""

from __future__ import annotations

import psycopg
import pytest

from storage.reader import RecordingReader
from tests.fixtures.gateway import toml_table
from tests.fixtures.slapd import GROUP_BASE, USER_DN, Slapd
from tests.proxy.pg.harness import PgHarness


async def test_a_rule_for_a_directory_user_applies_to_every_spelling_over_postgres(
    pg: PgHarness, slapd: Slapd
) -> None:
    pg.extra_toml = toml_table(
        "[ldap]", {"url": slapd.url, "user_dn": USER_DN, "group_base": GROUP_BASE}
    )
    pg.rules = [
        {"name": "carol-reads-only", "users": ["carol"], "sql": ["write"], "action": "deny"}
    ]
    await pg.start()
    for spelling in ("CAROL", "Carol"):
        dsn = pg.dsn(user=spelling, sslmode="require", password="carol-pw")
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="carol-reads-only"):
                await conn.execute("insert into hoop_guarded values (1)")
    await pg.wait_closed_recordings(2)
    users = set()
    for path in pg.recordings():
        with RecordingReader.open(path) as reader:
            users.add(reader.header.user)
    assert users == {"carol"}
