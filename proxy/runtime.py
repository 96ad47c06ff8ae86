"""A running gateway, composed: SSH and PostgreSQL listeners, the policy every command meets,
the approval broker with its control socket, and just-in-time access.

`GatewayRuntime.start()` brings them up in the order that keeps the gateway closed until it
can inspect and record: state and the broker first, then the listeners. `stop()` ends every
session (closing its recording) before the broker goes.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from proxy.auth import Authenticator, Identity
from proxy.config import ConfigError, GatewayConfig
from proxy.holds.broker import ApprovalBroker, Person, max_grant_from
from proxy.holds.console import Console
from proxy.holds.control import ControlServer, socket_path
from proxy.holds.enforcement import Enforcer
from proxy.holds.service import ApprovalService
from proxy.inspection import PolicyInspector
from proxy.live import LiveSessions
from proxy.memory import give_back_forever
from proxy.names import fold_name
from proxy.notify import Notifier, parse_notify
from proxy.oidc.identity import answered_for, describe_name
from proxy.pg.server import PgGateway, parse_pg_settings, pg_enabled, start_pg_gateway
from proxy.policy import ActiveGrant, Policy, may_start_session, parse_policy
from proxy.session import SessionRegistry
from proxy.ssh.console_pty import stop_all as stop_workstations
from proxy.ssh.console_pty import workstation_command
from proxy.ssh.gateway import SshGateway
from storage.catalogue import SqliteCatalogue
from storage.masking import MaskPolicy
from storage.private import private_tree_top
from storage.recorder import recover_unfinished
from storage.signing import load_or_create_mask_key as mask_secret
from storage.sqlite_state import SqliteState
from storage.state import Grant, StateStore

log = logging.getLogger("hoop.gateway")

GRANT_ENDED_MESSAGE = "hoop: your access grant {grant} has ended; session closed"


def operators(config: GatewayConfig) -> dict[str, str]:
    """`[control.operators]`: which OS account acts as which gateway identity on the control
    socket (the workstation and the scripting commands)."""
    section = config.raw.get("control", {})
    if not isinstance(section, dict):
        raise ConfigError(config.path, "control", "must be a table")
    mapping = section.get("operators", {})
    if not isinstance(mapping, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in mapping.items()
    ):
        raise ConfigError(
            config.path, "control.operators", 'must map OS users to gateway users: root = "bob"'
        )
    return dict(mapping)


def jit_approvers(config: GatewayConfig, target: str) -> list[str]:
    """Who approves grants for `target`: its `jit_approvers`, else its rules' approvers."""
    found = config.targets.get(target)
    approvers = found.raw.get("jit_approvers", []) if found is not None else []
    return [str(group) for group in approvers]


def check_config(config: GatewayConfig) -> None:
    """Everything a start would parse, without starting or writing anything: `gateway
    --check` fails on the same ConfigError the start would."""
    parse_policy(config.raw, config.path)
    if pg_enabled(config):
        parse_pg_settings(config)
    operators(config)
    max_grant_from(config.raw, config.path)
    MaskPolicy.from_raw_config(config.raw, config.path, bytes(32))
    parse_notify(config.raw, config.path)


class GatewayRuntime:
    """Everything `hoop-tui gateway` runs, wired together."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        clock: Callable[[], float] = time.time,
        store: StateStore | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        private_tree_top(config.data_dir)  # held commands, recordings, keys: owner-only
        self.policy: Policy = parse_policy(config.raw, config.path)
        if pg_enabled(config):
            parse_pg_settings(config)  # a config error stops the start, not the first login
        self.operators = operators(config)
        self.auth = Authenticator(config)
        store = store or SqliteState.in_data_dir(config.data_dir, gateway_id=config.gateway_id)
        self.broker = ApprovalBroker(store, config.gateway_id)
        self.control = ControlServer(socket_path(config.data_dir), self.person_for_os_user)
        self.approvals = ApprovalService(
            self.broker,
            self.control,
            clock=clock,
            on_grant_ended=self._grant_ended,
            grant_approvers=lambda target: jit_approvers(config, target),
            max_grant_s=max_grant_from(config.raw, config.path),
            describe_caller=lambda name: describe_name(config, name),
        )
        self.enforcer = Enforcer(self.approvals)
        self.masks = MaskPolicy.from_raw_config(
            config.raw, config.path, mask_secret(config.data_dir)
        )
        everyone = self.masks.for_everyone()
        self.notifier = Notifier(
            self.control,
            parse_notify(config.raw, config.path),
            mask=lambda text: everyone.mask_text(text)[0],
        )
        self.inspector = PolicyInspector(self.policy, self.enforcer, self.masks)
        self.ssh = SshGateway(config, inspector=self.inspector, authenticator=self.auth)
        context = self.ssh.context
        context.access_guard = self.access_problem
        context.console = self.console_for
        context.workstation = self.workstation_for
        # every live session, SSH and PostgreSQL: listed, watched, beside a hold (proxy/live.py)
        self.sessions: SessionRegistry = context.sessions
        self.live = LiveSessions(self.sessions, self.control, self.approvals)
        self.pg: PgGateway | None = None

    # -- identities and access ---------------------------------------------------------------

    def person(self, identity: Identity) -> Person:
        person = self._person(identity.name, frozenset(identity.groups))
        return replace(person, agent=True) if identity.kind == "agent" else person

    def _person(self, name: str, groups: frozenset[str]) -> Person:
        """A person, with the agents they own: they may not decide those agents' requests."""
        folded = fold_name(name)
        agent = any(fold_name(known) == folded for known in self.config.agents)
        return Person(name, groups, answered_for(self.config, name, groups), agent=agent)

    async def person_for_os_user(self, os_user: str) -> Person | None:
        """The person an operator's OS user acts as, named canonically like a login would be.
        A directory lookup runs off the event loop; DirectoryUnavailable when it cannot be
        answered (the control server refuses the connection and says why)."""
        name = self.operators.get(os_user)
        if name is None:
            return None
        local = self.auth.local_user(name)
        if local is not None:
            return self._person(local.name, frozenset(local.groups))
        found = await self.auth.directory_person(name)
        if found is None:
            return self._person(name, frozenset())
        return self._person(found.name, found.groups)

    def access_problem(self, identity: Identity, target_name: str) -> str | None:
        """Just-in-time access: a `jit = true` target needs a live grant."""
        target = self.config.targets.get(target_name)
        if target is None:
            return None
        live = [
            ActiveGrant(grant.id, grant.user, grant.target, grant.expires_at)
            for grant in self.approvals.live_grants()
            if grant.expires_at is not None
        ]
        access = may_start_session(
            identity.name,
            target_name,
            requires_jit=bool(target.raw.get("jit", False)),
            grants=live,
            now=self.clock(),
        )
        return None if access.allowed else f"hoop: {access.reason} (or `request` in the console)"

    def console_for(
        self, identity: Identity, read_line: Callable[[], Any], write: Callable[[str], None]
    ) -> Console:
        return Console(self.approvals, self.person(identity), read_line, write)

    def workstation_for(self, identity: Identity, term: str) -> tuple[list[str], dict[str, str]]:
        """The full-screen workstation for `ssh -t bob@gateway console`: argv and environment
        of a child that acts as bob (and only within `REMOTE_OPS`) through a console ticket,
        whatever OS user the gateway runs as."""
        ticket = self.control.tickets.issue(self.person(identity))
        return workstation_command(self.config.data_dir, ticket, term)

    def _grant_ended(self, grant: Grant) -> None:
        """End the live sessions that relied on a grant that expired or was revoked."""
        target = self.config.targets.get(grant.target)
        if target is None or not target.raw.get("jit", False):
            return
        message = GRANT_ENDED_MESSAGE.format(grant=grant.id)
        for session in list(self.sessions.sessions):  # SSH and PostgreSQL alike
            mine = session.identity.name == grant.user and session.target == grant.target
            if mine and self.access_problem(session.identity, grant.target) is not None:
                session.end("access grant ended", message)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        # the catalogue's file and the recordings are read off the loop, as everything later
        catalogue = await asyncio.to_thread(SqliteCatalogue.in_data_dir, self.config.data_dir)
        locate = None
        if self.config.recordings is not None:
            # what a crash left in the spool goes to object storage (in the background)
            from storage.spool import shared_spool

            spool = shared_spool(self.config.recordings, self.config.data_dir)
            for session_id in spool.recover():
                log.warning("session %s was left in the recording spool; uploading", session_id)
            locate = spool.local_copy
        recovered = await asyncio.to_thread(
            recover_unfinished, catalogue, self.config.gateway_id, locate
        )
        for session_id in recovered:
            log.warning("session %s was left open by a previous run; recovered", session_id)
        await self.control.start()
        await self.approvals.start(live_sessions=set())
        self.notifier.start()
        await self.ssh.start()
        if pg_enabled(self.config):
            self.pg = await start_pg_gateway(
                self.config,
                self.enforcer,
                policy=self.policy,
                authenticator=self.auth,
                sessions=self.sessions,
            )
            self.pg.access_guard = self.access_problem
            self.pg.masks = self.masks

    async def stop(self) -> None:
        if self.pg is not None:
            await self.pg.stop()
        await self.ssh.stop()
        await stop_workstations()
        await self.notifier.stop()
        await self.approvals.stop()
        await self.control.stop()
        if self.config.recordings is not None:
            from storage.spool import forget_spool, shared_spool

            spool = shared_spool(self.config.recordings, self.config.data_dir)
            await asyncio.to_thread(spool.stop)  # ship what it can; the rest waits in the spool
            forget_spool(self.config.recordings, self.config.data_dir)


async def run(config: GatewayConfig, ready: Callable[[GatewayRuntime], None] | None = None) -> None:
    """Run until SIGTERM or SIGINT, then stop cleanly."""
    from proxy.fleet.member import join_fleet, open_state

    store, member = await open_state(config)  # [state]: PostgreSQL, keys checked; else SQLite
    runtime = GatewayRuntime(config, store=store)
    await runtime.start()
    watch = None
    if member is not None:  # in a fleet: heartbeat, reaper, shared live sessions, peer channel
        watch = await join_fleet(runtime, store, member)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if ready is not None:
        ready(runtime)
    # after a burst of sessions, their memory goes back to the system
    trimmer = asyncio.ensure_future(give_back_forever(lambda: len(runtime.sessions.sessions)))
    try:
        await stop.wait()
        log.info("stop requested")
    finally:
        trimmer.cancel()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        if watch is not None:
            await watch.stop()
        await runtime.stop()
        if member is not None:
            await member.stop()
        await store.close()
