"""A PostgreSQL gateway in the test's event loop, in front of the machine's PostgreSQL.

`PgHarness.start()` writes a gateway.toml the way a person would, loads it with `load_config`,
builds the approval service and enforcer, and starts the PostgreSQL listener on a free port.
`run()` runs a real client program (psql, pgbench, pg_dump) against it.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxy.auth import hash_password
from proxy.config import load_config
from proxy.holds.broker import ApprovalBroker, Person
from proxy.holds.control import ControlServer, socket_path
from proxy.holds.enforcement import Enforcer
from proxy.holds.service import ApprovalService
from proxy.pg import wire
from proxy.pg.scram import MECHANISM, ScramClient, make_verifier
from proxy.pg.server import PgGateway
from storage.masking import MaskPolicy
from storage.reader import RecordingReader
from storage.schema import Event
from storage.sqlite_state import SqliteState
from tests.fixtures.gateway import toml_table

PG_HOST = "127.0.0.1"
PG_PORT = 5432
ALICE_PASSWORD = "alice-pw"
BOB_PASSWORD = "bob-pw"
CLIENT_TIMEOUT = 60.0
DIRECT_DSN = f"host={PG_HOST} port={PG_PORT} user=root dbname=test"  # straight to PostgreSQL
REVIEW_WRITES = {
    "name": "review-writes",
    "sql": ["write"],
    "action": "review",
    "approvers": ["oncall"],
}
_HASHES: dict[str, str] = {}


def pg_available() -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        try:
            sock.connect((PG_HOST, PG_PORT))
        except OSError:
            return False
    return True


def _hash(password: str) -> str:
    if password not in _HASHES:
        _HASHES[password] = hash_password(password, log_n=4)
    return _HASHES[password]


@dataclass
class Completed:
    status: int
    stdout: bytes
    stderr: bytes

    @property
    def out(self) -> str:
        return self.stdout.decode(errors="replace")

    @property
    def err(self) -> str:
        return self.stderr.decode(errors="replace")


@dataclass
class PgHarness:
    directory: Path
    rules: list[dict[str, Any]] = field(default_factory=list)
    postgres: dict[str, Any] = field(default_factory=lambda: {"allow_plain": True})
    targets: list[dict[str, Any]] = field(default_factory=list)
    upstream_port: int = PG_PORT
    gateway: PgGateway | None = None
    service: ApprovalService | None = None
    control: ControlServer | None = None
    extra_toml: str = ""

    def default_targets(self) -> list[dict[str, Any]]:
        base = {"protocol": "postgres", "host": PG_HOST, "port": self.upstream_port}
        return [
            {"name": "test", **base, "database": "test", "user": "root", "groups": ["*"]},
            {"name": "guarded", **base, "database": "test", "user": "root", "groups": ["*"]},
            {
                "name": "readonly",
                **base,
                "database": "test",
                "user": "root",
                "groups": ["*"],
                "read_only": True,
            },
        ]

    def write_config(self) -> Path:
        data_dir = self.directory / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        scram = {"alice": make_verifier(ALICE_PASSWORD, iterations=256).encode()}
        text = toml_table(
            "[gateway]", {"data_dir": str(data_dir), "id": "gw-pg", "pg_listen": "127.0.0.1:0"}
        )
        text += toml_table("[postgres]", self.postgres)
        text += toml_table("[postgres.scram]", scram)
        text += toml_table(
            "[[users]]",
            {"name": "alice", "password_hash": _hash(ALICE_PASSWORD), "groups": ["dev"]},
        )
        text += toml_table(
            "[[users]]", {"name": "bob", "password_hash": _hash(BOB_PASSWORD), "groups": ["oncall"]}
        )
        for target in self.targets or self.default_targets():
            text += toml_table("[[targets]]", target)
        for rule in self.rules:
            text += toml_table("[[rules]]", rule)
        text += self.extra_toml
        path = self.directory / "gateway.toml"
        path.write_text(text)
        return path

    async def start(self) -> PgGateway:
        config = load_config(self.write_config())
        people = {getpass.getuser(): Person("bob", frozenset({"oncall"}))}
        self.control = ControlServer(socket_path(config.data_dir), people.get)
        self.service = ApprovalService(
            ApprovalBroker(SqliteState.in_data_dir(config.data_dir), "gw-pg"), self.control
        )
        await self.control.start()
        await self.service.start()
        self.gateway = PgGateway(config, Enforcer(self.service))
        self.gateway.masks = MaskPolicy.from_raw_config(config.raw, config.path, b"k" * 32)
        await self.gateway.start()
        return self.gateway

    async def stop(self) -> None:
        if self.gateway is not None:
            await self.gateway.stop()
            self.gateway.auth.close()
        if self.service is not None:
            await self.service.stop()
        if self.control is not None:
            await self.control.stop()

    @property
    def port(self) -> int:
        assert self.gateway is not None
        return self.gateway.port

    def dsn(self, database: str = "test", user: str = "alice", **extra: str) -> str:
        password = ALICE_PASSWORD if user == "alice" else BOB_PASSWORD
        parts = {
            "host": "127.0.0.1",
            "port": str(self.port),
            "user": user,
            "dbname": database,
            "password": password,
            "sslmode": "disable",
            **extra,
        }
        return " ".join(f"{key}={value}" for key, value in parts.items())

    async def asyncpg(self, user: str = "alice", *, ssl: Any = False) -> Any:
        """An asyncpg connection to the `test` database through the gateway."""
        import asyncpg  # only the tests that use it pay for the import

        return await asyncpg.connect(
            host="127.0.0.1",
            port=self.port,
            user=user,
            password=ALICE_PASSWORD if user == "alice" else BOB_PASSWORD,
            database="test",
            ssl=ssl,
        )

    def env(self, database: str = "test", user: str = "alice") -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            PGHOST="127.0.0.1",
            PGPORT=str(self.port),
            PGUSER=user,
            PGDATABASE=database,
            PGPASSWORD=ALICE_PASSWORD if user == "alice" else BOB_PASSWORD,
            PGSSLMODE="disable",
            PGCONNECT_TIMEOUT="10",
        )
        return env

    async def run(
        self,
        *argv: str,
        database: str = "test",
        user: str = "alice",
        env: dict[str, str] | None = None,
        stdin: bytes | None = None,
        timeout: float = CLIENT_TIMEOUT,
    ) -> Completed:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env or self.env(database, user),
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(stdin), timeout)
        assert process.returncode is not None
        return Completed(process.returncode, stdout, stderr)

    async def psql(self, *args: str, database: str = "test", user: str = "alice") -> Completed:
        return await self.run(
            "psql", "-X", "-v", "ON_ERROR_STOP=0", *args, database=database, user=user
        )

    def recordings(self) -> list[Path]:
        return sorted((self.directory / "data" / "recordings").rglob("*.hrec"))

    def events(self, path: Path) -> list[Event]:
        with RecordingReader.open(path) as reader:
            return list(reader.events())

    async def wait_closed_recordings(self, count: int = 1, timeout: float = 10.0) -> None:
        """Wait until `count` sessions have ended (their recordings are complete)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        assert self.gateway is not None
        while loop.time() < deadline:
            if not self.gateway.connections and len(self.recordings()) >= count:
                return
            await asyncio.sleep(0.05)
        raise AssertionError("sessions did not end in time")


# -- a hand-made client, as an attacker would write one -------------------------------------


async def backend_messages(reader: asyncio.StreamReader, timeout: float = 20) -> AsyncIterator[Any]:
    """The gateway's messages as they come, decoded; AssertionError if it closes first."""
    messages = wire.MessageReader()
    while True:
        frame = messages.next()
        if frame is None:
            data = await asyncio.wait_for(reader.read(65536), timeout)
            assert data, "the gateway closed the connection"
            messages.feed(data)
            continue
        yield wire.decode_backend(frame)


async def tls_login_start(
    pg: PgHarness, user: str = "alice"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TLS connection to the gateway (certificate not checked) with its StartupMessage sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", pg.port)
    writer.write(wire.SSLRequest().encode())
    assert await reader.readexactly(1) == b"S"
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    await writer.start_tls(context)
    writer.write(
        wire.StartupMessage(wire.PROTOCOL_3_0, {"user": user, "database": "test"}).encode()
    )
    return reader, writer


def scram_reply(message: Any, scram: ScramClient, after_final: bytes = b"") -> bytes:
    """What a SCRAM client sends on `message`: its two messages, then `after_final` (sent at
    once on the server's last SCRAM message, without waiting for AuthenticationOk)."""
    if not isinstance(message, wire.Authentication):
        return b""
    if message.code == wire.AuthCode.SASL:
        return wire.PasswordMessage.sasl_initial_of(MECHANISM, scram.first()).encode()
    if message.code == wire.AuthCode.SASL_CONTINUE:
        return wire.PasswordMessage(scram.final(message.data)).encode()
    if message.code == wire.AuthCode.SASL_FINAL:
        return after_final
    return b""
