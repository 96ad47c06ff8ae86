"""Agent forwarding (`ssh -A`) to the targets that opt in with `agent_forwarding = true`.

The way it goes, for `ssh -A -J alice@gateway web1` (the inner connection carries the request)
and for `ssh -A alice+web1@gateway`:

1. The caller's ssh asks for agent forwarding (`auth-agent-req@openssh.com`) on its session
   channel. The gateway's asyncssh server accepts it only on a connection bound to a target
   with `agent_forwarding = true` (and not for a key marked `no-agent-forwarding`); elsewhere it
   answers "no", which OpenSSH clients do not even show, as sshd does with
   `AllowAgentForwarding no`. Accepting leaves a listener on the connection
   (`get_agent_path()`): that is how the gateway knows the caller asked.
2. When the session then starts, the link grants it (`TargetLink.ready`): the upstream
   connection asks the target for agent forwarding on its sessions, so `SSH_AUTH_SOCK` is set
   there, and the grant is recorded and logged.
3. Each agent connection the target opens (`ssh-add -l`, an onward `ssh`) reaches an
   `AgentRelay`: a Unix socket in a directory only the gateway's user can enter, which records
   the use as an `agent` channel and relays it to the caller's own agent over the caller's
   connection. What goes through (signing requests) is not recorded, like forwarded ports.

The gateway's own credential to the target is a key file or a password used by the upstream
login with no agent at all (`upstream.py`), so it never enters anyone's agent.

asyncssh decides agent forwarding once per connection, from its options, and has no public way
to change that afterwards; `allow_on_caller` and `forward_from_target` set the private
attributes its own code reads. If a future asyncssh renames them, forwarding stays off (fail
closed) and the gateway logs why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import asyncssh

log = logging.getLogger("hoop.ssh.agent")

_CALLER_FLAG = "_agent_forwarding"  # SSHServerConnection: accept auth-agent-req
_TARGET_PATH = "_agent_forward_path"  # SSHClientConnection: request it, and where to relay to
RELAY_CHUNK = 65536


def allow_on_caller(conn: asyncssh.SSHServerConnection, allowed: bool) -> None:
    """Let `conn` accept (or refuse) the caller's agent forwarding request from now on."""
    if not hasattr(conn, _CALLER_FLAG):
        if allowed:
            log.warning("this asyncssh cannot be told to accept agent forwarding; refusing it")
        return
    setattr(conn, _CALLER_FLAG, allowed)


def caller_offered_agent(conn: asyncssh.SSHServerConnection | None) -> bool:
    """Whether the caller asked for agent forwarding on `conn` and it was accepted."""
    return conn is not None and conn.get_agent_path() is not None


def forward_from_target(upstream: asyncssh.SSHClientConnection, relay_path: str) -> bool:
    """Ask the target for agent forwarding on the sessions opened from now on, relaying its
    agent connections to `relay_path`; False if this asyncssh cannot do that."""
    if not hasattr(upstream, _TARGET_PATH):
        log.warning("this asyncssh cannot forward an agent to a target; not forwarding it")
        return False
    setattr(upstream, _TARGET_PATH, relay_path)
    return True


class AgentRelay:
    """The gateway end of one session's agent forwarding: the target's agent connections come
    in on a private Unix socket and go out to the caller's agent over the caller's connection.

    `opened()` is called for each connection and returns the channel number it is recorded
    under (None refuses it: the session is ending or cannot record); `closed(number)` follows.
    """

    def __init__(
        self,
        caller: asyncssh.SSHServerConnection,
        opened: Callable[[], int | None],
        closed: Callable[[int], None],
    ) -> None:
        self.caller = caller
        self._opened = opened
        self._closed = closed
        self._directory = Path(tempfile.mkdtemp(prefix="hoop-agent-"))  # mode 0700
        self.path = str(self._directory / "agent.sock")
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.uses = 0

    async def start(self) -> str:
        self._server = await asyncio.start_unix_server(self._serve, self.path)
        return self.path

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = self._opened()
        if number is None:
            writer.close()
            return
        self.uses += 1
        self._writers.add(writer)
        try:
            try:
                agent_reader, agent_writer = await self.caller.open_agent_connection()
            except (asyncssh.Error, OSError) as exc:
                log.warning("cannot reach the caller's agent: %s", exc)
                return
            try:
                await asyncio.gather(
                    _pipe(reader, agent_writer.write, agent_writer.write_eof),
                    _pipe(agent_reader, writer.write, writer.write_eof),
                )
            finally:
                agent_writer.close()
        finally:
            self._writers.discard(writer)
            writer.close()
            self._closed(number)

    def close(self) -> None:
        """Stop listening, cut the agent connections still open and remove the socket."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        shutil.rmtree(self._directory, ignore_errors=True)


async def _pipe(
    source: asyncio.StreamReader | asyncssh.SSHReader[bytes],
    write: Callable[[bytes], object],
    write_eof: Callable[[], object],
) -> None:
    """Copy until end of file (agent messages are small: no flow control beyond SSH's own)."""
    with contextlib.suppress(asyncssh.Error, OSError):
        while data := await source.read(RELAY_CHUNK):
            write(data)
        write_eof()
