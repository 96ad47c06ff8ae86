"""The gateway config: a good file loads whole; a bad one names the file, the key and the fault."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from proxy.auth import hash_password
from proxy.config import ConfigError, load_config, parse_duration, parse_host_port

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMuWCl6pa4MpQsNTRtqh0j6qkxP1u8T5a4eFkmwL6TcV k"


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    import asyncssh

    path = tmp_path / "web1_key"
    path.write_bytes(asyncssh.generate_private_key("ssh-ed25519").export_private_key())
    return path


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def good(key_file: Path) -> str:
    return f"""
[gateway]
data_dir = "data"
ssh_listen = "127.0.0.1:2222"
idle_timeout = "15m"

[[users]]
name = "alice"
password_hash = "{hash_password("x", log_n=4)}"
authorized_keys = ["{KEY}"]
groups = ["dev"]

[[users]]
name = "agent7"
authorized_keys = ["{KEY}"]
groups = ["dev"]
service_account = true

[ldap]
url = "ldap://127.0.0.1:389"
user_dn = "uid={{user}},ou=people,dc=example,dc=org"
group_base = "ou=groups,dc=example,dc=org"

[[targets]]
name = "web1"
protocol = "ssh"
host = "127.0.0.1"
port = 22
user = "deploy"
key_file = "{key_file.name}"
host_key = "{KEY}"
groups = ["dev"]
port_forwarding = ["local"]
"""


def test_the_documented_shape_loads(tmp_path: Path, key_file: Path) -> None:
    config = load_config(write(tmp_path, good(key_file)))
    assert config.data_dir == tmp_path / "data"
    assert (config.ssh.listen_host, config.ssh.listen_port) == ("127.0.0.1", 2222)
    assert config.ssh.idle_timeout == 900
    assert config.users["alice"].groups == ("dev",)
    assert config.users["agent7"].service_account
    assert config.ldap is not None and config.ldap.dn_for("bob") == (
        "uid=bob,ou=people,dc=example,dc=org"
    )
    web1 = config.targets["web1"]
    assert (web1.host, web1.port, web1.user, web1.key_file) == ("127.0.0.1", 22, "deploy", key_file)
    assert web1.forwarding == ("local",)
    assert web1.allows(frozenset({"dev", "x"})) and not web1.allows(frozenset({"ops"}))


def test_the_example_config_loads(tmp_path: Path) -> None:
    example = Path(__file__).parents[2] / "examples" / "gateway.toml"
    text = example.read_text()
    with pytest.raises(ConfigError) as caught:  # its placeholder hash must be replaced first
        load_config(write(tmp_path, text))
    assert caught.value.key == "users[0].password_hash"
    placeholder = re.search(r'password_hash = "([^"]+)"', text)
    assert placeholder is not None
    text = text.replace(placeholder.group(1), hash_password("pw", log_n=4))
    with pytest.raises(ConfigError) as caught:  # its key file does not exist here
        load_config(write(tmp_path, text))
    assert caught.value.key == "targets[0].key_file"


@pytest.mark.parametrize(
    ("change", "key", "words"),
    [
        (
            ('ssh_listen = "127.0.0.1:2222"', 'ssh_listen = "127.0.0.1:http"'),
            "gateway.ssh_listen",
            "host:port",
        ),
        (('idle_timeout = "15m"', 'idle_timeout = "soon"'), "gateway.idle_timeout", "duration"),
        (('name = "agent7"', 'name = "alice"'), "users[1].name", "defined twice"),
        (('name = "alice"', 'name = "al+ice"'), "users[0].name", "letters, digits"),
        (
            ('groups = ["dev"]\n\n[[users]]', 'groups = "dev"\n\n[[users]]'),
            "users[0].groups",
            "list of non-empty strings",
        ),
        (
            ("service_account = true", 'service_account = "yes"'),
            "users[1].service_account",
            "true or false",
        ),
        (
            ('password_hash = "', 'password_hash = "plain'),
            "users[0].password_hash",
            "hash-password",
        ),
        (('group_base = "ou', 'colour = "blue"\ngroup_base = "ou'), "ldap.colour", "unknown key"),
        (('user_dn = "uid={user},', 'user_dn = "uid=x,'), "ldap.user_dn", "{user}"),
        (('url = "ldap://', 'url = "http://'), "ldap.url", "ldap://"),
        (("port = 22", "port = 0"), "targets[0].port", "port number"),
        (("port = 22", 'port = "22"'), "targets[0].port", "port number"),
        (('host = "127.0.0.1"', ""), "targets[0].host", "missing"),
        (('user = "deploy"', ""), "targets[0].user", "missing"),
        (
            ('groups = ["dev"]\nport_forwarding', "port_forwarding"),
            "targets[0].groups",
            "who may use it",
        ),
        (
            ('port_forwarding = ["local"]', 'port_forwarding = ["sideways"]'),
            "targets[0].port_forwarding",
            '"local"',
        ),
        (('protocol = "ssh"', 'protocol = "telnet"'), "targets[0].protocol", "ssh"),
        (
            ('port_forwarding = ["local"]', "agent_fowarding = true"),
            "targets[0].agent_fowarding",
            "unknown key (known: agent_forwarding, groups",
        ),
        (  # a postgres key on an ssh target is as wrong as a typo
            ('port_forwarding = ["local"]', "read_only = true"),
            "targets[0].read_only",
            "unknown key",
        ),
    ],
)
def test_errors_name_file_key_and_problem(
    tmp_path: Path, key_file: Path, change: tuple[str, str], key: str, words: str
) -> None:
    text = good(key_file)
    assert change[0] in text, change
    path = write(tmp_path, text.replace(change[0], change[1], 1))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.path == str(path)
    assert caught.value.key == key
    assert words in caught.value.problem
    assert str(caught.value).startswith(f"{path}: {key}: ")


def test_target_key_problems_are_named(tmp_path: Path, key_file: Path) -> None:
    text = good(key_file)
    missing = write(tmp_path, text.replace(key_file.name, "nope_key"))
    with pytest.raises(ConfigError, match=r"targets\[0\].key_file: cannot read .*nope_key"):
        load_config(missing)
    (tmp_path / "garbage_key").write_text("garbage")
    garbage = write(tmp_path, text.replace(key_file.name, "garbage_key"))
    with pytest.raises(ConfigError, match="not an unencrypted private key"):
        load_config(garbage)
    no_credential = write(tmp_path, text.replace(f'key_file = "{key_file.name}"', ""))
    with pytest.raises(ConfigError, match=r"targets\[0\]: needs key_file or password_env"):
        load_config(no_credential)
    unpinned = write(tmp_path, text.replace(f'host_key = "{KEY}"', ""))
    with pytest.raises(ConfigError, match=r"targets\[0\].host_key: missing: pin"):
        load_config(unpinned)
    bad_pin = write(tmp_path, text.replace(f'host_key = "{KEY}"', 'host_key = "ssh-ed25519 xx"'))
    with pytest.raises(ConfigError, match=r"targets\[0\].host_key: not a public key"):
        load_config(bad_pin)


def test_agent_forwarding_is_a_per_target_opt_in(tmp_path: Path, key_file: Path) -> None:
    text = good(key_file)
    assert not load_config(write(tmp_path, text)).targets["web1"].agent_forwarding
    opted = text.replace('port_forwarding = ["local"]', "agent_forwarding = true")
    assert load_config(write(tmp_path, opted)).targets["web1"].agent_forwarding
    wrong = text.replace('port_forwarding = ["local"]', 'agent_forwarding = "yes"')
    with pytest.raises(ConfigError, match=r"targets\[0\].agent_forwarding: must be true or false"):
        load_config(write(tmp_path, wrong))


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[gateway\n"))
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.toml")


@pytest.mark.parametrize(
    ("text", "seconds"), [(30, 30.0), ("90", 90.0), ("500ms", 0.5), ("10m", 600.0), ("2h", 7200.0)]
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "ten", "-5", True, "5y"])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_host_port() -> None:
    assert parse_host_port("0.0.0.0:2222", 22) == ("0.0.0.0", 2222)
    assert parse_host_port("[::1]:2222", 22) == ("::1", 2222)
    assert parse_host_port("gw", 22) == ("gw", 22)
    with pytest.raises(ValueError):
        parse_host_port("gw:99999", 22)


def test_a_mistyped_postgres_target_key_is_named(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[gateway]
data_dir = "data"

[[targets]]
name = "appdb"
protocol = "postgres"
host = "127.0.0.1"
user = "app"
read_onyl = true
groups = ["dev"]
""",
    )
    with pytest.raises(ConfigError, match=r"targets\[0\]\.read_onyl: unknown key .*read_only"):
        load_config(path)
