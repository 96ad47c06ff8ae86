"""A fleet on loopback: two or three `hoop-tui gateway` processes sharing one PostgreSQL
database (a fresh one per test), HAProxy in front of them (PROXY protocol v2), real OpenSSH
clients, and the real `hoop-tui` command line against each instance's control socket.

Every instance gets the same SSH host keys and recording signing key (copied from one
template data directory, as docs/deployment.md tells an operator to do).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxy.auth import hash_password
from tests.fixtures.gateway import toml_table
from tests.fixtures.haproxy import Backend, HAProxy
from tests.fixtures.processes import free_port
from tests.fixtures.sshd import Sshd, keygen

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Instance:
    name: str
    directory: Path
    ssh_port: int
    operator: str
    pg_port: int = 0  # the gateway identity the OS user acts as on this instance's control socket
    process: subprocess.Popen[bytes] | None = None

    @property
    def config(self) -> Path:
        return self.directory / "gateway.toml"

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def log(self) -> Path:
        return self.directory / "gateway.log"


@dataclass
class Fleet:
    directory: Path
    sshd: Sshd
    state_url: str
    names: tuple[str, ...] = ("gw-a", "gw-b")
    operators: tuple[str, ...] = ("bob", "carol", "bob")
    heartbeat: str = "200ms"
    lost_after: str = "1s"
    rules: list[dict[str, Any]] = field(default_factory=list)
    target: dict[str, Any] = field(default_factory=dict)
    instances: dict[str, Instance] = field(default_factory=dict)
    haproxy: HAProxy | None = None
    postgres: bool = False  # a PostgreSQL listener on each instance, target "test" (root@test)
    balance: str = "roundrobin"
    peers: bool = False  # the instance-to-instance channel (watch a session on any instance)
    recordings: dict[str, Any] = field(default_factory=dict)  # [recordings]: an object store

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for index, name in enumerate(self.names):
            self.instances[name] = Instance(
                name, self.directory / name, free_port(), self.operators[index], free_port()
            )
        for user in ("alice", "bob", "carol"):
            keygen(self.directory / f"{user}_key", user)

    # -- configuration -------------------------------------------------------------------------

    def _users(self) -> str:
        text = ""
        for user, groups in (("alice", ["dev"]), ("bob", ["ops", "dev"]), ("carol", ["ops"])):
            key = (self.directory / f"{user}_key.pub").read_text().strip()
            entry = {"name": user, "groups": groups, "authorized_keys": [key]}
            if user == "alice":
                entry["password_hash"] = hash_password("alice-pw", log_n=4)
            text += toml_table("[[users]]", entry)
        return text

    def write_configs(self) -> None:
        template = self.directory / "keys"
        if not template.exists():  # the fleet's keys, made once, copied to every instance
            from proxy.fleet.member import key_fingerprints

            key_fingerprints(template)
        for instance in self.instances.values():
            instance.directory.mkdir(exist_ok=True)
            if not instance.data_dir.exists():
                shutil.copytree(template, instance.data_dir)
            text = toml_table(
                "[gateway]",
                {
                    "data_dir": str(instance.data_dir),
                    "instance": instance.name,
                    "ssh_listen": f"127.0.0.1:{instance.ssh_port}",
                    "trusted_proxies": ["127.0.0.1"],
                    **({"pg_listen": f"127.0.0.1:{instance.pg_port}"} if self.postgres else {}),
                    **({"peer_listen": "127.0.0.1:0"} if self.peers else {}),
                },
            )
            if self.postgres:
                text += toml_table("[postgres]", {"allow_plain": True})
            text += toml_table(
                "[state]",
                {"url": self.state_url, "heartbeat": self.heartbeat, "lost_after": self.lost_after},
            )
            if self.recordings:
                text += toml_table("[recordings]", self.recordings)
            text += toml_table("[control.operators]", {_os_user(): instance.operator})
            text += self._users()
            target = {
                "name": "web1",
                "protocol": "ssh",
                "host": "127.0.0.1",
                "port": self.sshd.port,
                "user": self.sshd.user,
                "key_file": str(self.sshd.key_file),
                "host_key": self.sshd.host_key,
                "groups": ["dev"],
                "jit_approvers": ["ops"],
                **self.target,
            }
            text += toml_table("[[targets]]", target)
            if self.postgres:
                text += toml_table(
                    "[[targets]]",
                    {
                        "name": "test",
                        "protocol": "postgres",
                        "host": "127.0.0.1",
                        "port": 5432,
                        "database": "test",
                        "user": "root",
                        "groups": ["dev"],
                    },
                )
            for rule in self.rules:
                text += toml_table("[[rules]]", rule)
            instance.config.write_text(text)

    # -- processes -----------------------------------------------------------------------------

    def migrate(self) -> None:
        first = next(iter(self.instances.values()))
        done = self.hoop_sync(first.name, "state", "migrate")
        assert done.returncode == 0, done.stderr

    def start_instance(self, name: str) -> None:
        instance = self.instances[name]
        log = open(instance.log, "ab")  # noqa: SIM115
        instance.process = subprocess.Popen(
            [sys.executable, "-m", "hoop_tui", "gateway", "--config", str(instance.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )
        self.wait_listening(name)

    def wait_listening(self, name: str, timeout: float = 60) -> None:
        instance = self.instances[name]
        assert instance.process is not None
        sock = instance.data_dir / "control.sock"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if instance.process.poll() is not None:
                raise AssertionError(f"{name} exited:\n{instance.log.read_text()[-3000:]}")
            if sock.exists() and _accepts(instance.ssh_port):
                return
            time.sleep(0.05)
        raise AssertionError(f"{name} did not start:\n{instance.log.read_text()[-3000:]}")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        instance = self.instances[name]
        assert instance.process is not None
        os.killpg(instance.process.pid, sig)
        instance.process.wait(30)

    def start(self) -> None:
        self.write_configs()
        self.migrate()
        for name in self.instances:
            self.start_instance(name)
        backends = [Backend(i.name, i.ssh_port, "send-proxy-v2") for i in self.instances.values()]
        frontends = {"ssh": backends}
        for backend in backends:  # one frontend per instance, to reach it on purpose
            frontends[f"ssh_{backend.name}"] = [backend]
        if self.postgres:
            frontends["pg"] = [
                Backend(i.name, i.pg_port, "send-proxy-v2") for i in self.instances.values()
            ]
        self.haproxy = HAProxy(self.directory / "haproxy", frontends, balance=self.balance)
        self.haproxy.directory.mkdir(exist_ok=True)
        self.haproxy.start()

    def stop(self) -> None:
        if self.haproxy is not None:
            self.haproxy.stop()
        for instance in self.instances.values():
            if instance.process is not None and instance.process.poll() is None:
                os.killpg(instance.process.pid, signal.SIGTERM)
                try:
                    instance.process.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(instance.process.pid, signal.SIGKILL)
                    instance.process.wait()

    # -- clients -------------------------------------------------------------------------------

    def port(self, frontend: str = "ssh") -> int:
        assert self.haproxy is not None
        return self.haproxy.ports[frontend]

    def ssh_argv(self, user: str, frontend: str, login: str, *command: str) -> list[str]:
        known = self.directory / "known_hosts"
        if not known.exists():
            first = next(iter(self.instances.values()))
            line = self.hoop_sync(first.name, "gateway", "--known-hosts").stdout.strip()
            known.write_text(line + "\n")
        return [
            "ssh",
            "-o", f"UserKnownHostsFile={known}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes",
            "-o", "IdentitiesOnly=yes",
            "-o", "IdentityAgent=none",
            "-o", "ConnectTimeout=15",
            "-i", str(self.directory / f"{user}_key"),
            "-p", str(self.port(frontend)),
            f"{login}@127.0.0.1",
            *command,
        ]  # fmt: skip

    async def ssh(
        self, user: str, command: str, *, frontend: str = "ssh", target: str = "web1"
    ) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            *self.ssh_argv(user, frontend, f"{user}+{target}", command),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )

    def hoop_sync(self, name: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "hoop_tui", *args, "--config", str(self.instances[name].config)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )

    async def hoop(self, name: str, *args: str) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hoop_tui", *args,
            "--config", str(self.instances[name].config),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 120)
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()

    async def holds(self, name: str) -> list[dict[str, Any]]:
        status, out, err = await self.hoop(name, "holds", "--json")
        assert status == 0, err
        listed: list[dict[str, Any]] = json.loads(out)
        return listed


def _os_user() -> str:
    import getpass

    return getpass.getuser()


def _accepts(port: int) -> bool:
    """Whether the instance listens; it is asked as HAProxy's health check asks (a PROXY v2
    LOCAL header), since it expects a header from 127.0.0.1."""
    import socket

    from proxy.fleet.proxy_protocol import v2_header

    with socket.socket() as sock:
        sock.settimeout(0.2)
        try:
            sock.connect(("127.0.0.1", port))
            sock.sendall(v2_header(None, None))
        except OSError:
            return False
    return True
