"""The PostgreSQL gateway's configuration: `[gateway] pg_listen`, the `[postgres]` table and
the postgres targets, parsed from `config.raw` into `PgSettings` and `PgTarget`s. Pure: it
reads files only for a target's password, when a login needs it."""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxy.config import ConfigError, GatewayConfig, TargetConfig, parse_host_port
from proxy.pg.scram import ScramError, Verifier

DEFAULT_PG_LISTEN = "127.0.0.1:15432"
_SETTINGS_KEYS = frozenset(
    {
        "allow_plain",
        "plain_passwords",
        "cert_file",
        "key_file",
        "sample_rows",
        "unparsable",
        "login_timeout",
        "login_cache",
        "spare_logins",
        "scram",
        "sql_functions",
    }
)
_SSLMODES = ("disable", "prefer", "require", "verify-full")


class UnparsableMode(enum.Enum):
    POLICY = "policy"  # the `unparsable` class goes to the rules and [policy] unparsable
    SYNTAX_ERROR = "syntax_error"  # answer with the parser's syntax error, run nothing


@dataclass(frozen=True, slots=True)
class PgTarget:
    name: str
    host: str
    port: int
    database: str
    user: str
    groups: tuple[str, ...]
    password_env: str | None = None
    password_file: Path | None = None
    read_only: bool = False
    sslmode: str = "disable"
    ca_file: Path | None = None

    def password(self) -> str | None:
        """The gateway's credential for the target, read when needed, never logged."""
        if self.password_env:
            return os.environ.get(self.password_env)
        if self.password_file:
            try:
                return self.password_file.read_text(encoding="utf-8").rstrip("\r\n")
            except OSError:
                return None
        return None

    def allows(self, groups: frozenset[str]) -> bool:
        return "*" in self.groups or any(group in self.groups for group in groups)


@dataclass(frozen=True, slots=True)
class PgSettings:
    listen_host: str = "127.0.0.1"
    listen_port: int = 15432
    allow_plain: bool = False
    plain_passwords: bool = False
    cert_file: Path | None = None
    key_file: Path | None = None
    sample_rows: int = 20
    unparsable: UnparsableMode = UnparsableMode.POLICY
    login_timeout: float = 30.0
    login_cache: float = 60.0  # seconds a verified password is remembered (0: never)
    spare_logins: float = 10.0  # seconds a target login made ahead is kept (0: none made)
    scram: dict[str, Verifier] = field(default_factory=dict)
    targets: dict[str, PgTarget] = field(default_factory=dict)
    # the operator's functions that run SQL given as text: name -> argument (0-based)
    sql_functions: dict[str, int] = field(default_factory=dict)

    def target_for(self, database: str) -> PgTarget | None:
        """The target a client's database name picks: by target name, else by `database`."""
        if database in self.targets:
            return self.targets[database]
        matches = [t for t in self.targets.values() if t.database == database]
        return matches[0] if len(matches) == 1 else None


FileOf = Callable[[Mapping[str, Any], str, str], Path | None]


def parse_pg_settings(config: GatewayConfig) -> PgSettings:
    """`[gateway] pg_listen`, the `[postgres]` table and the postgres targets; ConfigError
    naming the key when something is wrong."""
    path = config.path
    host, port = _listen(config)
    section = config.raw.get("postgres", {})
    if not isinstance(section, dict):
        raise ConfigError(path, "postgres", "must be a table ([postgres])")
    for key in section:
        if key not in _SETTINGS_KEYS:
            raise ConfigError(
                path, f"postgres.{key}", f"unknown key (known: {', '.join(sorted(_SETTINGS_KEYS))})"
            )
    file = _file_reader(path)
    cert_file, key_file = (
        file(section, "cert_file", "postgres"),
        file(section, "key_file", "postgres"),
    )
    if (cert_file is None) != (key_file is None):
        raise ConfigError(path, "postgres.cert_file", "cert_file and key_file go together")
    login_timeout, login_cache = _login_times(section, path)
    spare_logins = _seconds(section, "spare_logins", 10, 600, path)
    return PgSettings(
        listen_host=host or "0.0.0.0",
        listen_port=port,
        allow_plain=_flag(section, "allow_plain", path),
        plain_passwords=_flag(section, "plain_passwords", path),
        cert_file=cert_file,
        key_file=key_file,
        sample_rows=_sample_rows(section, path),
        unparsable=_unparsable(section, path),
        login_timeout=login_timeout,
        login_cache=login_cache,
        spare_logins=spare_logins,
        scram=_scram_verifiers(section, path),
        sql_functions=_sql_functions(section, path),
        targets={
            name: _pg_target(target, path, file)
            for name, target in config.targets.items()
            if target.protocol == "postgres"
        },
    )


def _listen(config: GatewayConfig) -> tuple[str, int]:
    gateway = config.raw.get("gateway", {})
    listen = gateway.get("pg_listen", DEFAULT_PG_LISTEN)
    if not isinstance(listen, str) or not listen:
        raise ConfigError(config.path, "gateway.pg_listen", 'must be a string "host:port"')
    try:
        return parse_host_port(listen, 15432)
    except ValueError as exc:
        raise ConfigError(config.path, "gateway.pg_listen", f'must be "host:port": {exc}') from None


def _flag(section: Mapping[str, Any], key: str, path: Path) -> bool:
    value = section.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(path, f"postgres.{key}", "must be true or false")
    return value


def _file_reader(path: Path) -> FileOf:
    """A file path setting, relative to the configuration file's directory."""

    def file(table: Mapping[str, Any], key: str, where: str) -> Path | None:
        value = table.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise ConfigError(path, f"{where}.{key}", "must be a file path")
        resolved = Path(value)
        return resolved if resolved.is_absolute() else (path.parent / resolved).resolve()

    return file


def _sample_rows(section: Mapping[str, Any], path: Path) -> int:
    sample_rows = section.get("sample_rows", 20)
    if isinstance(sample_rows, bool) or not isinstance(sample_rows, int) or sample_rows < 0:
        raise ConfigError(path, "postgres.sample_rows", "must be a whole number, 0 or more")
    return sample_rows


def _unparsable(section: Mapping[str, Any], path: Path) -> UnparsableMode:
    try:
        return UnparsableMode(section.get("unparsable", "policy"))
    except ValueError:
        raise ConfigError(
            path, "postgres.unparsable", 'must be "policy" or "syntax_error"'
        ) from None


def _login_times(section: Mapping[str, Any], path: Path) -> tuple[float, float]:
    login_timeout = section.get("login_timeout", 30)
    if isinstance(login_timeout, bool) or not isinstance(login_timeout, int | float):
        raise ConfigError(path, "postgres.login_timeout", "must be a number of seconds")
    login_cache = section.get("login_cache", 60)
    if (
        isinstance(login_cache, bool)
        or not isinstance(login_cache, int | float)
        or not 0 <= login_cache <= 3600
    ):
        raise ConfigError(
            path, "postgres.login_cache", "must be a number of seconds from 0 (off) to 3600"
        )
    return float(login_timeout), float(login_cache)


def _seconds(
    section: Mapping[str, Any], key: str, default: float, most: float, path: Path
) -> float:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= most:
        raise ConfigError(
            path, f"postgres.{key}", f"must be a number of seconds from 0 (off) to {most:g}"
        )
    return float(value)


def _scram_verifiers(section: Mapping[str, Any], path: Path) -> dict[str, Verifier]:
    scram_table = section.get("scram", {})
    if not isinstance(scram_table, dict):
        raise ConfigError(path, "postgres.scram", "must be a table of user = verifier")
    scram: dict[str, Verifier] = {}
    for user, text in scram_table.items():
        try:
            scram[user] = Verifier.parse(text if isinstance(text, str) else "")
        except ScramError:
            raise ConfigError(
                path,
                f"postgres.scram.{user}",
                "is not a SCRAM-SHA-256 verifier (make one with `python -m proxy.pg.scram`)",
            ) from None
    return scram


def _sql_functions(section: Mapping[str, Any], path: Path) -> dict[str, int]:
    sql_functions: dict[str, int] = {}
    listed = section.get("sql_functions", {})
    if not isinstance(listed, dict):
        raise ConfigError(path, "postgres.sql_functions", "must be a table of name = argument")
    for name, number in listed.items():
        if isinstance(number, bool) or not isinstance(number, int) or number < 1:
            raise ConfigError(
                path,
                f"postgres.sql_functions.{name}",
                "must be the number of the argument holding the SQL (1 for the first)",
            )
        # matched by name in any schema, as the classifier reads a call (fails closed)
        sql_functions[str(name).rsplit(".", 1)[-1].lower()] = number - 1
    return sql_functions


def _pg_target(target: TargetConfig, path: Path, file: FileOf) -> PgTarget:
    raw = target.raw
    where = f"targets ({target.name})"
    # Keys shared by every target (name, host, groups, jit...) belong to proxy/config.py,
    # which owns the unknown-key check; only the postgres keys are read here.
    database = raw.get("database", target.name)
    user = raw.get("user", "")
    if not isinstance(database, str) or not database:
        raise ConfigError(path, f"{where}.database", "must be a non-empty string")
    if not isinstance(user, str) or not user:
        raise ConfigError(path, f"{where}.user", "missing: the gateway's own database user")
    password_env = raw.get("password_env")
    if password_env is not None and (not isinstance(password_env, str) or not password_env):
        raise ConfigError(path, f"{where}.password_env", "must be an environment variable name")
    read_only = raw.get("read_only", False)
    if not isinstance(read_only, bool):
        raise ConfigError(path, f"{where}.read_only", "must be true or false")
    sslmode = raw.get("sslmode", "disable")
    if sslmode not in _SSLMODES:
        raise ConfigError(path, f"{where}.sslmode", f"must be one of {', '.join(_SSLMODES)}")
    ca_file = file(raw, "ca_file", where)
    if ca_file is not None and sslmode != "verify-full":
        # Only verify-full checks a certificate; a CA that checks nothing must not look like
        # protection in the config.
        raise ConfigError(
            path,
            f"{where}.ca_file",
            f'{ca_file} is only used with sslmode = "verify-full", and sslmode is "{sslmode}" '
            "(which does not check the target's certificate): set sslmode = "
            '"verify-full" to check the target against it, or remove ca_file',
        )
    return PgTarget(
        name=target.name,
        host=target.host,
        port=target.port,
        database=database,
        user=user,
        groups=target.groups,
        password_env=password_env,
        password_file=file(raw, "password_file", where),
        read_only=read_only,
        sslmode=sslmode,
        ca_file=ca_file,
    )
