"""The asyncssh server callers log in to, and the inner servers it runs for ProxyJump.

A caller reaches a target in one of three ways:
- `ssh -J alice@gateway web1`: alice logs in to the gateway, then asks it to forward a TCP
  connection to `web1`. The gateway does not forward it: it answers that channel itself with an
  inner SSH server (`InnerServer`) presenting a host certificate for `web1`, already bound to
  alice's identity (the outer login proved it), and bridges what she opens there to the target.
- `ssh alice+web1@gateway`: the target is in the login name; sessions are bridged directly.
- `ssh alice@gateway`: no target named; the session lists the targets alice may use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncssh

from proxy.auth import Authenticator, Identity
from proxy.config import GatewayConfig, TargetConfig
from proxy.oidc.ssh_login import OidcLogin
from proxy.session import SessionRegistry
from proxy.ssh.agent import allow_on_caller
from proxy.ssh.channels import AllowAll, CallerChannel, ChannelInspector
from proxy.ssh.corking import lean_writes
from proxy.ssh.forwarding import forward_to_target, listen_on_target
from proxy.ssh.hostkeys import HostKeys
from proxy.ssh.link import LinkRegistry, TargetLink
from proxy.ssh.login import LoginName, parse_login
from proxy.ssh.menu import MenuCaller, MenuChannel, NoticeChannel
from proxy.ssh.upstream import TargetUnavailable

log = logging.getLogger("hoop.ssh")


@dataclass(slots=True)
class GatewayContext:
    """What every connection shares: config, identities, host keys and the live links."""

    config: GatewayConfig
    auth: Authenticator
    hostkeys: HostKeys
    registry: LinkRegistry = field(default_factory=LinkRegistry)
    sessions: SessionRegistry = field(default_factory=SessionRegistry)  # shared with PostgreSQL
    inspector: ChannelInspector = field(default_factory=AllowAll)
    connections: set[asyncssh.SSHServerConnection] = field(default_factory=set)
    # Set by the gateway runtime: just-in-time access, and the approver console (line mode;
    # with a terminal, `workstation` gives the argv and environment of the full-screen one).
    access_guard: Callable[[Identity, str], str | None] | None = None
    console: Callable[..., Any] | None = None
    workstation: Callable[[Identity, str], tuple[list[str], dict[str, str]]] | None = None

    def access_problem(self, identity: Identity, target_name: str) -> str | None:
        """Why `identity` may not use `target_name`, or None when it may."""
        target = self.config.targets.get(target_name)
        if target is None or target.protocol != "ssh":
            return f"hoop: no SSH target named {target_name!r}"
        if not target.allows(identity.groups):
            return (
                f"hoop: {identity.name} may not use target {target_name!r} "
                f"(it is open to the groups: {', '.join(target.groups)})"
            )
        if self.access_guard is not None:
            return self.access_guard(identity, target_name)
        return None

    def allowed_targets(self, identity: Identity) -> list[TargetConfig]:
        return [
            target
            for target in self.config.targets.values()
            if target.protocol == "ssh" and target.allows(identity.groups)
        ]

    def server_options(
        self, principals: tuple[str, ...], agent_forwarding: bool = False, **kwargs: Any
    ) -> Any:
        """asyncssh server options shared by the outer listener and the inner servers.

        Agent forwarding is refused unless the connection is bound to a target that allows it
        (`agent_forwarding` here for an inner server, `allow_on_caller` after a direct login)."""
        return asyncssh.SSHServerConnectionOptions(
            server_host_keys=self.hostkeys.server_host_keys(principals),
            encoding=None,
            line_editor=False,
            agent_forwarding=agent_forwarding,
            x11_forwarding=False,
            login_timeout=self.config.ssh.login_timeout,
            keepalive_interval=60,
            **kwargs,
        )


class CallerServer(OidcLogin, asyncssh.SSHServer):
    """One caller's connection to the gateway: login (keyboard-interactive, with OIDC, in
    proxy/oidc/ssh_login.py), then sessions and forwards."""

    def __init__(self, context: GatewayContext) -> None:
        self.context = context
        self.conn: asyncssh.SSHServerConnection | None = None
        self.client = "unknown"
        self.client_host = "unknown"
        self.login = LoginName("")
        self.identity: Identity | None = None
        self.key_identity: Identity | None = None
        self.link: TargetLink | None = None
        self.refusal: str | None = None
        self.jump_links: set[TargetLink] = set()

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        lean_writes(conn)
        self.conn = conn
        self.context.connections.add(conn)
        peer = conn.get_extra_info("peername") or ("unknown", 0)
        self.client_host = str(peer[0])
        self.client = f"{peer[0]}:{peer[1]}"

    # -- login ---------------------------------------------------------------------------------

    async def begin_auth(self, username: str) -> bool:
        self.login = parse_login(username)
        if self.context.config.ssh.banner:  # before any password is typed
            self._banner(self.context.config.ssh.banner)
        keys, result = await self.context.auth.authorized_keys(self.login.user)
        self.key_identity = result.identity
        if result.message:
            self._banner(result.message)
        if keys is not None and self.conn is not None:
            self.conn.set_authorized_keys(keys)
        return True

    def password_auth_supported(self) -> bool:
        return True

    async def validate_password(self, username: str, password: str) -> bool:
        result = await self.context.auth.check_password(self.login.user, password, self.client_host)
        if result.message:
            self._banner(result.message)
        if result.identity is None:
            return False
        self.identity = result.identity
        return True

    def _banner(self, message: str) -> None:
        if self.conn is not None:
            self.conn.send_auth_banner(message)

    def auth_completed(self) -> None:
        if self.identity is None:
            self.identity = self.key_identity
        identity = self.identity
        assert identity is not None
        self.arm_expiry()  # a token's expiry, an agent's maximum session length
        log.info(
            "%s logged in from %s%s",
            identity.name,
            self.client,
            f" for target {self.login.target}" if self.login.target else "",
        )
        if self.login.target is None:
            return
        self.refusal = self.context.access_problem(identity, self.login.target)
        if self.refusal is not None:
            log.warning("%s refused: %s", identity.name, self.refusal)
            return
        self.link = self.start_link(self.login.target, "direct")
        self.link.client_conn = self.conn
        if self.conn is not None and self.link.target.agent_forwarding:
            allow_on_caller(self.conn, True)
        self.link.spawn(self._connect(self.link))

    def start_link(self, target_name: str, mode: str, **extra: Any) -> TargetLink:
        assert self.identity is not None
        client_version = self.conn.get_extra_info("client_version") if self.conn else ""
        return TargetLink(
            self.context.config,
            self.context.registry,
            self.identity,
            self.context.config.targets[target_name],
            self.client,
            mode,
            extra={"client_version": client_version or "", **extra},
            sessions=self.context.sessions,
        )

    async def _connect(self, link: TargetLink) -> None:
        with contextlib.suppress(TargetUnavailable):  # sessions waiting on ready() say why
            await link.connect()

    # -- channels ------------------------------------------------------------------------------

    def session_requested(self) -> asyncssh.SSHServerSession[bytes]:
        if self.link is not None:
            return CallerChannel(self.link, self.context.inspector)
        if self.refusal is not None:
            return NoticeChannel(self.refusal, status=1)
        assert self.identity is not None
        identity = self.identity
        return MenuChannel(
            MenuCaller(
                identity,
                self.login.user,
                self.client,
                self.context.allowed_targets(identity),
                lambda name: self.context.access_problem(identity, name),
                self._bridge_from_menu,
                self.start_issue,
                self.context.console,
                self.context.workstation,
                self.context.config.ssh.idle_timeout,
            )
        )

    def _bridge_from_menu(self, target_name: str) -> CallerChannel:
        """The caller picked a target in the menu: this connection's link from now on, and the
        channel that bridges the menu's session to it."""
        link = self.link = self.start_link(target_name, "menu")
        link.client_conn = self.conn
        link.spawn(self._connect(link))
        return CallerChannel(link, self.context.inspector)

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> Any:
        if self.link is not None:
            return forward_to_target(self.link, dest_host, dest_port, orig_host, orig_port)
        return self._jump(dest_host, dest_port)

    def server_requested(self, listen_host: str, listen_port: int) -> Any:
        if self.link is None or self.conn is None:
            return False
        return listen_on_target(self.link, self.conn, listen_host, listen_port)

    async def _jump(self, dest_host: str, dest_port: int) -> asyncssh.SSHServerConnection:
        """ProxyJump: answer the forward to a target name with an inner SSH server."""
        assert self.identity is not None
        problem = self.context.access_problem(self.identity, dest_host)
        if problem is not None:
            log.warning("%s from %s: jump refused: %s", self.identity.name, self.client, problem)
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, problem)
        link = self.start_link(dest_host, "jump", jump_port=dest_port)
        try:
            await link.connect()
        except TargetUnavailable as exc:
            await link.end("target unavailable")
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, f"hoop: {exc}") from None
        options = self.context.server_options(
            (link.target.name,),
            agent_forwarding=link.target.agent_forwarding and self._agent_permitted(),
            server_factory=lambda: InnerServer(self.context, link, self),
        )
        inner = asyncssh.SSHServerConnection(asyncio.get_running_loop(), options)
        link.client_conn = inner
        self.jump_links.add(link)
        return inner

    def _agent_permitted(self) -> bool:
        """The outer login's key (or certificate) does not say `no-agent-forwarding`: the inner
        server of a jump has no login of its own, so it inherits the outer one's restriction."""
        return self.conn is not None and (
            self.conn.check_key_permission("agent-forwarding")
            and self.conn.check_certificate_permission("agent-forwarding")
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.disarm_expiry()
        if self.conn is not None:
            self.context.connections.discard(self.conn)
        if self.link is not None:
            self.link.spawn(self.link.end("client closed"))
        for link in list(self.jump_links):
            link.spawn(link.end("client closed"))


class InnerServer(CallerServer):
    """The SSH server inside a ProxyJump channel: the caller is already known, no second login."""

    def __init__(self, context: GatewayContext, link: TargetLink, outer: CallerServer) -> None:
        super().__init__(context)
        self.link = link
        self.outer = outer
        self.identity = link.identity

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        lean_writes(conn)
        self.conn = conn
        self.client = self.outer.client
        self.client_host = self.outer.client_host

    async def begin_auth(self, username: str) -> bool:
        self.link.extra["inner_user"] = username  # type: ignore[union-attr]
        return False  # the outer login already proved who this is

    def auth_completed(self) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        link = self.link
        assert link is not None
        self.outer.jump_links.discard(link)
        link.spawn(link.end("client closed"))
