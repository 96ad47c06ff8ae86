"""The gateway configuration: one TOML file, read once, validated whole before anything starts.

Errors name the file, the key and what is wrong, so a broken config never half-starts a gateway.
Sections beyond `[gateway]` are added by the features that need them; `raw` keeps the whole
parsed file for sections this module does not know. The reference is docs/configuration.md.
"""

from __future__ import annotations

import fnmatch
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from storage.config_file import ConfigError as ConfigError
from storage.config_file import entry_key as entry_key
from storage.config_file import parse_named_entries as parse_named_entries

if TYPE_CHECKING:
    from proxy.oidc.config import AgentConfig, OidcConfig
    from storage.objectstore import StoreSettings

DEFAULT_CONFIG_NAME = "gateway.toml"
# Where `hoop-tui up` creates its data directory and configuration by default.
UP_DATA_DIR = "hoop-data"
DEFAULT_SSH_LISTEN = "127.0.0.1:2222"
DEFAULT_ENV_ALLOW = ("LANG", "LC_*")
LOGIN_SEPARATOR = "+"
FORWARDING_KINDS = ("local", "remote")
# The keys a [[targets]] entry may have: shared, then by protocol (docs/configuration.md and,
# for postgres, docs/sql-classes.md describe each).
TARGET_KEYS = frozenset(
    {"name", "protocol", "host", "port", "user", "groups", "jit", "jit_approvers"}
)
TARGET_KEYS_BY_PROTOCOL = {
    "ssh": frozenset(
        {
            "key_file",
            "password_env",
            "host_key",
            "port_forwarding",
            "agent_forwarding",
            "shell_mode",
        }
    ),
    "postgres": frozenset(
        {"database", "password_env", "password_file", "read_only", "sslmode", "ca_file"}
    ),
}
# The keys [gateway] may have (docs/configuration.md); a typo is an error, not a default.
GATEWAY_KEYS = frozenset(
    {
        "data_dir",
        "id",
        "ssh_listen",
        "ssh_host_names",
        "idle_timeout",
        "login_timeout",
        "env_allow",
        "pg_listen",
        "banner",
        "instance",
        "trusted_proxies",
        "peer_listen",
        "peer_advertise",
    }
)
# What `hoop-tui hash-password` prints: cost parameters, a salt of 8+ bytes and a digest of 16+
# bytes in standard base64. A placeholder pasted from an example fails here, not at login.
SCRYPT_HASH_PATTERN = re.compile(
    r"^\$scrypt\$ln=\d{1,2},r=\d{1,2},p=\d{1,2}\$[A-Za-z0-9+/]{11,}\$[A-Za-z0-9+/]{22,}$"
)
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
DURATION_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
# How a shell request is served: `guard` reads the target shell's screen, `strict` makes the
# gateway the line editor and runs each line on its own (proxy/ssh/strict.py). Strictest wins.
SHELL_MODES = ("guard", "strict")


@dataclass(frozen=True, slots=True)
class UserConfig:
    """A local user. A service account is key-only: an agent, never a person typing."""

    name: str
    password_hash: str | None = None
    authorized_keys: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    service_account: bool = False
    shell_mode: str = "guard"


@dataclass(frozen=True, slots=True)
class LdapConfig:
    """Where LDAP users are checked: a bind as the user proves the password."""

    url: str
    user_dn: str
    group_base: str | None = None
    timeout: float = 5.0
    start_tls: bool = False
    bind_dn: str | None = None
    bind_password_env: str | None = None

    def dn_for(self, user: str) -> str:
        return self.user_dn.replace("{user}", escape_dn_value(user))


@dataclass(frozen=True, slots=True)
class TargetConfig:
    """A server the gateway logs in to with a credential only the gateway holds."""

    name: str
    protocol: str
    host: str
    port: int
    user: str = ""
    key_file: Path | None = None
    password_env: str | None = None
    host_key: str | None = None
    groups: tuple[str, ...] = ()
    forwarding: tuple[str, ...] = ()
    agent_forwarding: bool = False  # `ssh -A` reaches the target (see proxy/ssh/agent.py)
    shell_mode: str = "guard"
    raw: dict[str, Any] = field(default_factory=dict)

    def allows(self, groups: tuple[str, ...] | frozenset[str]) -> bool:
        """`*` in a target's groups admits every authenticated identity."""
        return "*" in self.groups or any(group in self.groups for group in groups)


@dataclass(frozen=True, slots=True)
class SshSettings:
    """The SSH listener of the gateway."""

    listen_host: str = "127.0.0.1"
    listen_port: int = 2222
    host_names: tuple[str, ...] = ()
    idle_timeout: float | None = None
    login_timeout: float = 60.0
    env_allow: tuple[str, ...] = DEFAULT_ENV_ALLOW
    banner: str = ""  # shown by ssh before login: say that sessions are recorded

    def env_allowed(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.env_allow)


@dataclass(slots=True)
class GatewayConfig:
    path: Path
    data_dir: Path
    gateway_id: str
    raw: dict[str, Any]
    ssh: SshSettings = field(default_factory=SshSettings)
    users: dict[str, UserConfig] = field(default_factory=dict)
    ldap: LdapConfig | None = None
    targets: dict[str, TargetConfig] = field(default_factory=dict)
    group_shell_modes: dict[str, str] = field(default_factory=dict)
    # [recordings] url = "s3://...": recordings go to object storage through a local spool
    recordings: StoreSettings | None = None
    oidc: OidcConfig | None = None  # [oidc] and [[agents]]: proxy/oidc/config.py
    agents: dict[str, AgentConfig] = field(default_factory=dict)

    def shell_mode(self, user: str, groups: frozenset[str] | tuple[str, ...], target: str) -> str:
        """`strict` if the target, the user or any of their groups asks for it, else `guard`."""
        modes = {self.group_shell_modes.get(group, "guard") for group in groups}
        if (entry := self.targets.get(target)) is not None:
            modes.add(entry.shell_mode)
        if (person := self.users.get(user)) is not None:
            modes.add(person.shell_mode)
        if (agent := self.agents.get(user)) is not None:
            modes.add(agent.shell_mode)  # strict unless the agent's entry says otherwise
        return "strict" if "strict" in modes else "guard"


def resolve_config_path(explicit: str | None) -> Path:
    """--config, then $HOOP_CONFIG, then ./gateway.toml, then the one `hoop-tui up` wrote
    (./hoop-data/gateway.toml), so that every command works in the folder `up` ran in."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("HOOP_CONFIG")
    if env:
        return Path(env)
    here = Path(DEFAULT_CONFIG_NAME)
    made_by_up = Path(UP_DATA_DIR) / DEFAULT_CONFIG_NAME
    if not here.exists() and made_by_up.is_file():
        return made_by_up
    return here


def load_config(path: Path) -> GatewayConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            path, "", "no such file (give --config FILE, set HOOP_CONFIG, or run `hoop-tui up`)"
        ) from None
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read: {exc.strerror}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "", f"not valid TOML: {exc}") from None
    gateway = raw.get("gateway")
    if not isinstance(gateway, dict):
        raise ConfigError(path, "gateway", "missing [gateway] section")
    data_dir = gateway.get("data_dir")
    if not isinstance(data_dir, str) or not data_dir:
        raise ConfigError(path, "gateway.data_dir", "must be a non-empty string (a directory)")
    resolved = Path(data_dir)
    if not resolved.is_absolute():
        resolved = (path.parent / resolved).resolve()
    gateway_id = gateway.get("id", os.uname().nodename)
    if not isinstance(gateway_id, str) or not gateway_id:
        raise ConfigError(path, "gateway.id", "must be a non-empty string")
    if "instance" in gateway:  # a fleet's name for this instance (docs/deployment.md)
        instance = gateway["instance"]
        if not isinstance(instance, str) or not NAME_PATTERN.match(instance):
            raise ConfigError(path, "gateway.instance", 'must be a name like "gw-a"')
        if "id" in gateway and gateway["id"] != instance:
            raise ConfigError(path, "gateway.instance", "differs from gateway.id; give one")
        gateway_id = instance
    reader = _Reader(path)
    reader.known_keys(gateway, GATEWAY_KEYS, "gateway")
    users = reader.users(raw.get("users", []))
    oidc, agents = _oidc_sections(path, raw, users)
    return GatewayConfig(
        path=path,
        data_dir=resolved,
        gateway_id=gateway_id,
        raw=raw,
        ssh=reader.ssh_settings(gateway),
        users=users,
        ldap=reader.ldap(raw.get("ldap")),
        targets=reader.targets(raw.get("targets", [])),
        group_shell_modes=reader.groups(raw.get("groups", [])),
        oidc=oidc,
        agents=agents,
        recordings=_recordings(path, raw.get("recordings")),
    )


def _oidc_sections(
    path: Path, raw: dict[str, Any], users: dict[str, UserConfig]
) -> tuple[OidcConfig | None, dict[str, AgentConfig]]:
    """`[oidc]` and `[[agents]]`, read by proxy/oidc/config.py."""
    from proxy.oidc import config as oidc_config

    try:
        oidc = oidc_config.parse_oidc(path, raw.get("oidc"))
        return oidc, oidc_config.parse_agents(path, raw.get("agents"), oidc, users)
    except oidc_config.OidcConfigError as exc:
        raise ConfigError(exc.path, exc.key, exc.problem) from None


def _recordings(path: Path, section: object) -> StoreSettings | None:
    """`[recordings]` (docs/object-storage.md); the readers of this process can then open
    the store's recordings by URL."""
    from storage.objectstore import StoreConfigError, parse_settings, remember

    try:
        settings = parse_settings(section, path.parent)
    except StoreConfigError as exc:
        raise ConfigError(path, exc.key, exc.problem) from None
    remember(settings)
    return settings


def parse_duration(value: object) -> float:
    """Seconds from a number or a string such as "90", "500ms", "10m", "1.5h"; ValueError if not."""
    if isinstance(value, bool):
        raise ValueError("expected a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := DURATION_PATTERN.match(value)):
        seconds = float(match.group(1)) * DURATION_UNITS[match.group(2)]
    else:
        raise ValueError('expected a duration such as 30, "500ms", "10m" or "2h"')
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def parse_host_port(value: str, default_port: int) -> tuple[str, int]:
    """Split "host:port" (or "[v6]:port", or a bare host); ValueError if the port is bad."""
    host, sep, port_text = value.rpartition(":")
    if not sep:
        return value, default_port
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"bad port {port_text!r}")
    return host, int(port_text)


def escape_dn_value(value: str) -> str:
    """Escape a value for use inside a DN (RFC 4514), so a user name cannot change the DN."""
    out = []
    for index, char in enumerate(value):
        if char in ',+"\\<>;=' or (char == "#" and index == 0) or ord(char) < 32:
            out.append(f"\\{ord(char):02x}" if ord(char) < 32 else "\\" + char)
        elif char == " " and index in (0, len(value) - 1):
            out.append("\\ ")
        else:
            out.append(char)
    return "".join(out)


class _Reader:
    """Validates the sections one key at a time, naming the file and key in every error."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(self.path, key, problem)

    def string(self, table: dict[str, Any], key: str, where: str, required: bool = False) -> str:
        value = table.get(key)
        if value is None:
            if required:
                raise self.error(f"{where}.{key}", "missing (a non-empty string is required)")
            return ""
        if not isinstance(value, str) or (required and not value):
            raise self.error(f"{where}.{key}", "must be a non-empty string")
        return value

    def string_list(self, table: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
        value = table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.error(f"{where}.{key}", "must be a list of non-empty strings")
        return tuple(value)

    def boolean(self, table: dict[str, Any], key: str, where: str, default: bool) -> bool:
        value = table.get(key, default)
        if not isinstance(value, bool):
            raise self.error(f"{where}.{key}", "must be true or false")
        return value

    def duration(self, table: dict[str, Any], key: str, where: str) -> float | None:
        if key not in table:
            return None
        try:
            seconds = parse_duration(table[key])
        except ValueError as exc:
            raise self.error(f"{where}.{key}", str(exc)) from None
        return seconds or None

    def known_keys(
        self, table: dict[str, Any], allowed: set[str] | frozenset[str], where: str
    ) -> None:
        for key in table:
            if key not in allowed:
                raise self.error(
                    f"{where}.{key}", f"unknown key (known: {', '.join(sorted(allowed))})"
                )

    def ssh_settings(self, gateway: dict[str, Any]) -> SshSettings:
        listen = gateway.get("ssh_listen", DEFAULT_SSH_LISTEN)
        if not isinstance(listen, str) or not listen:
            raise self.error("gateway.ssh_listen", 'must be a string "host:port"')
        try:
            host, port = parse_host_port(listen, 2222)
        except ValueError as exc:
            raise self.error("gateway.ssh_listen", f'must be "host:port": {exc}') from None
        host_names = self.string_list(gateway, "ssh_host_names", "gateway")
        env_allow = gateway.get("env_allow", list(DEFAULT_ENV_ALLOW))
        if not isinstance(env_allow, list) or not all(isinstance(v, str) for v in env_allow):
            raise self.error("gateway.env_allow", "must be a list of variable names or globs")
        login_timeout = self.duration(gateway, "login_timeout", "gateway") or 60.0
        return SshSettings(
            listen_host=host or "0.0.0.0",
            listen_port=port,
            host_names=host_names,
            idle_timeout=self.duration(gateway, "idle_timeout", "gateway"),
            login_timeout=login_timeout,
            env_allow=tuple(env_allow),
            banner=self.banner(gateway),
        )

    def banner(self, gateway: dict[str, Any]) -> str:
        text = gateway.get("banner", "")
        if not isinstance(text, str):
            raise self.error("gateway.banner", "must be a string")
        if any(not ch.isprintable() and ch not in "\n\t" for ch in text):
            raise self.error("gateway.banner", "may hold printable text and line breaks only")
        return text if not text or text.endswith("\n") else text + "\n"

    def users(self, entries: object) -> dict[str, UserConfig]:
        if not isinstance(entries, list):
            raise self.error("users", "must be an array of tables ([[users]])")
        users: dict[str, UserConfig] = {}
        for index, entry in enumerate(entries):
            where = f"users[{index}]"
            if not isinstance(entry, dict):
                raise self.error(where, "must be a table")
            self.known_keys(
                entry,
                {
                    "name",
                    "password_hash",
                    "authorized_keys",
                    "groups",
                    "service_account",
                    "shell_mode",
                },
                where,
            )
            name = self.string(entry, "name", where, required=True)
            if LOGIN_SEPARATOR in name or not NAME_PATTERN.match(name):
                raise self.error(f"{where}.name", "may hold letters, digits, '.', '_' and '-' only")
            if name in users:
                raise self.error(f"{where}.name", f"user {name!r} is defined twice")
            password_hash = self.string(entry, "password_hash", where) or None
            if password_hash is not None and not SCRYPT_HASH_PATTERN.match(password_hash):
                raise self.error(
                    f"{where}.password_hash",
                    "is not a hash made by `hoop-tui hash-password` (run it and paste its output)",
                )
            keys = self.string_list(entry, "authorized_keys", where)
            for key_index, key in enumerate(keys):
                import asyncssh  # here, not at the top: `hoop-tui --help` needs no SSH

                try:
                    asyncssh.import_authorized_keys(key)
                except (ValueError, asyncssh.KeyImportError) as exc:
                    raise self.error(
                        f"{where}.authorized_keys[{key_index}]", f"not a public key: {exc}"
                    ) from None
            service = self.boolean(entry, "service_account", where, False)
            if service and password_hash:
                raise self.error(
                    f"{where}.password_hash", "a service account logs in with keys only"
                )
            if service and not keys:
                raise self.error(
                    f"{where}.authorized_keys", "a service account needs at least one key"
                )
            users[name] = UserConfig(
                name=name,
                password_hash=password_hash,
                authorized_keys=keys,
                groups=self.string_list(entry, "groups", where),
                service_account=service,
                shell_mode=self.shell_mode(entry, where),
            )
        return users

    def shell_mode(self, table: dict[str, Any], where: str) -> str:
        value = table.get("shell_mode", "guard")
        if value not in SHELL_MODES:
            raise self.error(f"{where}.shell_mode", 'must be "guard" or "strict"')
        return str(value)

    def groups(self, entries: object) -> dict[str, str]:
        """`[[groups]]`: settings for a group (local or LDAP) by name; today its shell mode."""
        if not isinstance(entries, list):
            raise self.error("groups", "must be an array of tables ([[groups]])")
        modes: dict[str, str] = {}
        for index, entry in enumerate(entries):
            where = f"groups[{index}]"
            if not isinstance(entry, dict):
                raise self.error(where, "must be a table")
            self.known_keys(entry, {"name", "shell_mode"}, where)
            name = self.string(entry, "name", where, required=True)
            if name in modes:
                raise self.error(f"{where}.name", f"group {name!r} is listed twice")
            modes[name] = self.shell_mode(entry, where)
        return modes

    def ldap(self, section: object) -> LdapConfig | None:
        if section is None:
            return None
        if not isinstance(section, dict):
            raise self.error("ldap", "must be a table ([ldap])")
        self.known_keys(
            section,
            {
                "url",
                "user_dn",
                "group_base",
                "timeout",
                "start_tls",
                "bind_dn",
                "bind_password_env",
            },
            "ldap",
        )
        url = self.string(section, "url", "ldap", required=True)
        if not url.startswith(("ldap://", "ldaps://")):
            raise self.error("ldap.url", 'must start with "ldap://" or "ldaps://"')
        user_dn = self.string(section, "user_dn", "ldap", required=True)
        if "{user}" not in user_dn:
            raise self.error("ldap.user_dn", "must contain {user}, replaced by the login name")
        return LdapConfig(
            url=url,
            user_dn=user_dn,
            group_base=self.string(section, "group_base", "ldap") or None,
            timeout=self.duration(section, "timeout", "ldap") or 5.0,
            start_tls=self.boolean(section, "start_tls", "ldap", False),
            bind_dn=self.string(section, "bind_dn", "ldap") or None,
            bind_password_env=self.string(section, "bind_password_env", "ldap") or None,
        )

    def targets(self, entries: object) -> dict[str, TargetConfig]:
        if not isinstance(entries, list):
            raise self.error("targets", "must be an array of tables ([[targets]])")
        targets: dict[str, TargetConfig] = {}
        for index, entry in enumerate(entries):
            where = f"targets[{index}]"
            if not isinstance(entry, dict):
                raise self.error(where, "must be a table")
            name = self.string(entry, "name", where, required=True)
            if LOGIN_SEPARATOR in name or not NAME_PATTERN.match(name):
                raise self.error(f"{where}.name", "may hold letters, digits, '.', '_' and '-' only")
            if name in targets:
                raise self.error(f"{where}.name", f"target {name!r} is defined twice")
            protocol = entry.get("protocol", "ssh")
            if protocol not in ("ssh", "postgres"):
                raise self.error(f"{where}.protocol", 'must be "ssh" or "postgres"')
            # A mistyped key (`agent_fowarding`, `read_onyl`) must not silently do nothing.
            self.known_keys(entry, TARGET_KEYS | TARGET_KEYS_BY_PROTOCOL[protocol], where)
            host = self.string(entry, "host", where, required=True)
            port = entry.get("port", 22 if protocol == "ssh" else 5432)
            if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
                raise self.error(f"{where}.port", "must be a port number (1-65535)")
            groups = self.string_list(entry, "groups", where)
            if not groups:
                raise self.error(f"{where}.groups", 'must name who may use it (["*"] for everyone)')
            if protocol == "ssh":
                targets[name] = self.ssh_target(entry, where, name, host, port, groups)
            else:
                targets[name] = TargetConfig(
                    name=name,
                    protocol=protocol,
                    host=host,
                    port=port,
                    user=self.string(entry, "user", where),
                    groups=groups,
                    raw=entry,
                )
        return targets

    def key_file(self, entry: dict[str, Any], where: str) -> Path | None:
        """A target's `key_file`, relative to the configuration, read once to check it."""
        import asyncssh

        key_text = self.string(entry, "key_file", where)
        if not key_text:
            return None
        key_file = Path(key_text)
        if not key_file.is_absolute():
            key_file = (self.path.parent / key_file).resolve()
        try:
            asyncssh.read_private_key(key_file)
        except OSError as exc:
            raise self.error(
                f"{where}.key_file", f"cannot read {key_file}: {exc.strerror}"
            ) from None
        except (ValueError, asyncssh.KeyImportError) as exc:
            raise self.error(
                f"{where}.key_file", f"{key_file} is not an unencrypted private key: {exc}"
            ) from None
        return key_file

    def ssh_target(
        self,
        entry: dict[str, Any],
        where: str,
        name: str,
        host: str,
        port: int,
        groups: tuple[str, ...],
    ) -> TargetConfig:
        import asyncssh  # here, not at the top: `hoop-tui --help` needs no SSH

        user = self.string(entry, "user", where, required=True)
        key_file = self.key_file(entry, where)
        password_env = self.string(entry, "password_env", where) or None
        if key_file is None and password_env is None:
            raise self.error(where, "needs key_file or password_env: the gateway's credential")
        host_key = self.string(entry, "host_key", where) or None
        if host_key is None:
            raise self.error(
                f"{where}.host_key",
                "missing: pin the target's host key (for example from `ssh-keyscan`)",
            )
        try:
            asyncssh.import_public_key(host_key)
        except (ValueError, asyncssh.KeyImportError) as exc:
            raise self.error(f"{where}.host_key", f"not a public key: {exc}") from None
        forwarding = self.string_list(entry, "port_forwarding", where)
        for kind in forwarding:
            if kind not in FORWARDING_KINDS:
                raise self.error(
                    f"{where}.port_forwarding", 'may only list "local" (-L) and "remote" (-R)'
                )
        agent_forwarding = self.boolean(entry, "agent_forwarding", where, False)
        return TargetConfig(
            name=name,
            protocol="ssh",
            host=host,
            port=port,
            user=user,
            key_file=key_file,
            password_env=password_env,
            host_key=host_key,
            groups=groups,
            forwarding=forwarding,
            agent_forwarding=agent_forwarding,
            shell_mode=self.shell_mode(entry, where),
            raw=entry,
        )
