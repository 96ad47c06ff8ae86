"""Starting and stopping the SSH gateway: the listener, the idle watch, a clean stop.

Stopping (SIGTERM, or `stop()`) closes the listener, tells every live session why, closes both
sides and closes every recording with `gateway stopped` before returning.
"""

from __future__ import annotations

import asyncio
import logging

import asyncssh

from proxy.auth import Authenticator
from proxy.config import GatewayConfig
from proxy.fleet.listener import ProxiedTunnel
from proxy.fleet.settings import trusted_proxies
from proxy.ssh.channels import AllowAll, ChannelInspector
from proxy.ssh.hostkeys import HostKeys
from proxy.ssh.link import watch_idle
from proxy.ssh.server import CallerServer, GatewayContext

log = logging.getLogger("hoop.ssh")

STOP_MESSAGE = "hoop: the gateway is shutting down; session closed"


class SshGateway:
    """The SSH side of a running gateway."""

    def __init__(
        self,
        config: GatewayConfig,
        inspector: ChannelInspector | None = None,
        authenticator: Authenticator | None = None,
    ) -> None:
        self.config = config
        self.context = GatewayContext(
            config=config,
            auth=authenticator or Authenticator(config),
            hostkeys=HostKeys(config.data_dir / "ssh"),
            inspector=inspector or AllowAll(),
        )
        self.acceptor: asyncssh.SSHAcceptor | None = None
        self._idle_task: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()

    @property
    def port(self) -> int:
        assert self.acceptor is not None
        return int(self.acceptor.get_port())

    @property
    def host_names(self) -> tuple[str, ...]:
        ssh = self.config.ssh
        names = [*ssh.host_names, ssh.listen_host, "localhost", "127.0.0.1"]
        return tuple(dict.fromkeys(name for name in names if name not in ("", "0.0.0.0", "::")))

    def known_hosts_line(self) -> str:
        return self.context.hostkeys.known_hosts_line()

    async def start(self) -> None:
        ssh = self.config.ssh
        options = self.context.server_options(
            self.host_names, server_factory=lambda: CallerServer(self.context)
        )
        # Behind HAProxy: connections from [gateway] trusted_proxies carry a PROXY header naming
        # the caller, whose address the session, its recording and login throttling then see.
        trusted = trusted_proxies(self.config)
        self.acceptor = await asyncssh.listen(
            ssh.listen_host,
            ssh.listen_port,
            options=options,
            reuse_address=True,
            **({"tunnel": ProxiedTunnel(trusted)} if trusted else {}),
        )
        if ssh.idle_timeout:
            self._idle_task = asyncio.ensure_future(
                watch_idle(self.context.registry, ssh.idle_timeout)
            )
        log.info("SSH gateway listening on %s:%d", ssh.listen_host, self.port)

    async def stop(self) -> None:
        """Stop accepting, end every session with a proper end event, wait for the recordings."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self.acceptor is not None:
            self.acceptor.close()
        if self._idle_task is not None:
            self._idle_task.cancel()
        await self.context.registry.end_all("gateway stopped", STOP_MESSAGE)
        for conn in list(self.context.connections):  # logins in progress, idle menus
            conn.close()
        if self.acceptor is not None:
            await self.acceptor.wait_closed()
        self.context.auth.close()
        log.info("SSH gateway stopped")
