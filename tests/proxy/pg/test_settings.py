"""`[gateway] pg_listen`, `[postgres]` and postgres targets, read from the gateway config."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config import ConfigError, load_config
from proxy.pg.scram import make_verifier
from proxy.pg.server import parse_pg_settings, pg_enabled
from proxy.pg.session import UnparsableMode

BASE = """
[gateway]
data_dir = "data"

[[targets]]
name = "appdb"
protocol = "postgres"
host = "db.internal"
database = "app"
user = "gateway"
password_env = "APPDB_PASSWORD"
groups = ["dev"]
"""


def settings(tmp_path: Path, extra: str = "", base: str = BASE):  # type: ignore[no-untyped-def]
    path = tmp_path / "gateway.toml"
    path.write_text(base + extra)
    return parse_pg_settings(load_config(path))


def test_defaults_and_target(tmp_path: Path) -> None:
    found = settings(tmp_path)
    assert (found.listen_host, found.listen_port) == ("127.0.0.1", 15432)
    assert not found.allow_plain and found.sample_rows == 20
    assert found.unparsable is UnparsableMode.POLICY
    target = found.targets["appdb"]
    assert (target.database, target.user, target.port, target.read_only) == (
        "app",
        "gateway",
        5432,
        False,
    )
    assert found.target_for("appdb") is target and found.target_for("app") is target
    assert found.target_for("other") is None
    assert pg_enabled(load_config(tmp_path / "gateway.toml"))


def test_all_keys(tmp_path: Path) -> None:
    verifier = make_verifier("pw", iterations=64).encode()
    found = settings(
        tmp_path,
        f"""
[postgres]
allow_plain = true
sample_rows = 5
unparsable = "syntax_error"

[postgres.scram]
alice = "{verifier}"
""",
        base=BASE.replace("[gateway]\n", '[gateway]\npg_listen = "0.0.0.0:6543"\n'),
    )
    assert (found.listen_host, found.listen_port) == ("0.0.0.0", 6543)
    assert found.allow_plain and found.sample_rows == 5
    assert found.unparsable is UnparsableMode.SYNTAX_ERROR
    assert found.scram["alice"].encode() == verifier


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ("\n[postgres]\nbogus = 1\n", "postgres.bogus"),
        ('\n[postgres]\nunparsable = "allow"\n', "postgres.unparsable"),
        ("\n[postgres]\nsample_rows = -1\n", "postgres.sample_rows"),
        ('\n[postgres.scram]\nalice = "plain-password"\n', "postgres.scram.alice"),
        ('\n[postgres]\ncert_file = "x.pem"\n', "postgres.cert_file"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, extra: str, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings(tmp_path, extra)
    assert caught.value.key == key


def test_target_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="user"):
        settings(tmp_path, base=BASE.replace('user = "gateway"\n', ""))
    with pytest.raises(ConfigError, match="sslmode"):
        settings(tmp_path, base=BASE.replace("groups", 'sslmode = "maybe"\ngroups'))
    with pytest.raises(ConfigError, match="read_only"):
        settings(tmp_path, base=BASE.replace("groups", 'read_only = "yes"\ngroups'))


@pytest.mark.parametrize("sslmode", [None, "disable", "prefer", "require"])
def test_a_ca_file_without_verify_full_is_an_error_naming_file_and_key(
    tmp_path: Path, sslmode: str | None
) -> None:
    # Only verify-full checks a certificate: a CA that would check nothing is refused rather
    # than read as protection.
    mode = f'sslmode = "{sslmode}"\n' if sslmode else ""
    base = BASE.replace("groups", f'{mode}ca_file = "certs/db-ca.crt"\ngroups')
    with pytest.raises(ConfigError) as caught:
        settings(tmp_path, base=base)
    error = caught.value
    assert error.key == "targets (appdb).ca_file"
    assert str(tmp_path / "certs" / "db-ca.crt") in error.problem
    assert 'set sslmode = "verify-full"' in error.problem and "remove ca_file" in error.problem
    assert f'sslmode is "{sslmode or "disable"}"' in error.problem
    assert str(error).startswith(f"{tmp_path / 'gateway.toml'}: targets (appdb).ca_file: ")


def test_a_ca_file_with_verify_full_is_resolved_next_to_the_config(tmp_path: Path) -> None:
    base = BASE.replace("groups", 'sslmode = "verify-full"\nca_file = "db-ca.crt"\ngroups')
    target = settings(tmp_path, base=base).targets["appdb"]
    assert (target.sslmode, target.ca_file) == ("verify-full", tmp_path / "db-ca.crt")
