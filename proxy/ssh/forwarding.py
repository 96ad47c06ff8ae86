"""Port forwarding through a target (`ssh -L`, `ssh -R`), only where the target's config allows.

A local forward opens `direct-tcpip` from the target to the destination; a remote forward
listens on the target and opens `forwarded-tcpip` channels back to the caller. Both are
recorded as a `port_forward` open event, then a close event with the bytes each way.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncssh

from proxy.ssh.link import RecordingUnavailable, TargetLink
from proxy.ssh.upstream import TargetUnavailable

log = logging.getLogger("hoop.ssh")


class TcpHalf(asyncssh.SSHTCPSession):  # type: ignore[type-arg]
    """One end of a forwarded TCP stream; the bridge joins two of them."""

    def __init__(self, bridge: ForwardBridge, inbound: bool) -> None:
        self.bridge = bridge
        self.inbound = inbound  # True: bytes arriving here travel from the target side
        self.chan: asyncssh.SSHTCPChannel[bytes] | None = None
        self.peer: TcpHalf | None = None

    def connection_made(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:
        self.chan = chan

    def data_received(self, data: bytes, datatype: int | None) -> None:
        if self.peer is None or self.peer.chan is None:
            return
        self.bridge.count(len(data), self.inbound)
        self.peer.chan.write(data)

    def eof_received(self) -> bool:
        if self.peer is not None and self.peer.chan is not None:
            self.peer.chan.write_eof()
        return True

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.chan is not None:
            self.peer.chan.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.chan is not None:
            self.peer.chan.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.chan is not None:
            self.peer.chan.close()
        self.bridge.closed()


class ForwardBridge:
    """A recorded forwarded connection: byte counts, open and close events."""

    def __init__(self, link: TargetLink, direction: str, host: str, port: int) -> None:
        self.link = link
        self.direction = direction
        self.host = host
        self.port = port
        self.bytes_in = 0
        self.bytes_out = 0
        self.number = -1
        self.caller = TcpHalf(self, inbound=False)
        self.target = TcpHalf(self, inbound=True)
        self.caller.peer, self.target.peer = self.target, self.caller
        self.done = False

    async def open(self) -> None:
        """Record the opening (the session's recording starts with the first forward or
        channel, off the event loop); ChannelOpenError when it cannot be recorded."""
        try:
            await self.link.start_recording()
        except RecordingUnavailable:
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
                "hoop: the forward cannot be recorded, so the gateway refuses it",
            ) from None
        self.number = self.link.add_channel(self)
        kind = "direct-tcpip" if self.direction == "local" else "forwarded-tcpip"
        session = self.link.session
        ok = session.record_channel_open(
            self.number, kind, f"{self.host}:{self.port}"
        ) and session.record_port_forward(
            self.number, "open", self.direction, self.host, self.port, 0, 0
        )
        if not ok:
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, "hoop: recording failed"
            )

    def count(self, size: int, inbound: bool) -> None:
        self.link.touch()
        if inbound:
            self.bytes_in += size
        else:
            self.bytes_out += size

    def closed(self) -> None:
        if self.done or self.number < 0:
            return
        self.done = True
        session = self.link.session
        session.record_port_forward(
            self.number,
            "close",
            self.direction,
            self.host,
            self.port,
            self.bytes_in,
            self.bytes_out,
        )
        session.record_channel_close(self.number)
        self.link.remove_channel(self.number)

    async def wait_closed(self) -> None:
        return None

    def pause_for_recording(self, paused: bool) -> None:
        """Forwards record only counts: nothing to hold back for the recorder."""

    def shut_down(self, message: str) -> None:
        for half in (self.caller, self.target):
            if half.chan is not None:
                half.chan.close()


# An agent's commands are all judged (strict shells, writes held); a forwarded port would carry
# traffic to the target's services that no gate reads, so agents never get one.
AGENT_REFUSAL = "hoop: agents may not forward ports (no gate reads what a forward carries)"


def forward_to_target(
    link: TargetLink, dest_host: str, dest_port: int, orig_host: str, orig_port: int
) -> Any:
    """`ssh -L`: a coroutine giving the caller-side session, or a refusal."""
    if link.identity.agent:
        log.warning(
            "%r: local forward to %s:%d refused: agents do not forward", link, dest_host, dest_port
        )
        raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, AGENT_REFUSAL)
    if "local" not in link.target.forwarding:
        log.warning("%r: local forward to %s:%d refused by config", link, dest_host, dest_port)
        raise asyncssh.ChannelOpenError(
            asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
            f"hoop: port forwarding is not allowed on target {link.target.name}",
        )

    async def open_forward() -> TcpHalf:
        upstream = await link.ready()
        bridge = ForwardBridge(link, "local", dest_host, dest_port)
        await bridge.open()
        try:
            await upstream.create_connection(
                lambda: bridge.target, dest_host, dest_port, orig_host, orig_port
            )
        except asyncssh.ChannelOpenError as exc:
            bridge.closed()
            raise asyncssh.ChannelOpenError(exc.code, f"hoop: target says: {exc.reason}") from None
        return bridge.caller

    return open_forward()


def listen_on_target(
    link: TargetLink, caller_conn: asyncssh.SSHServerConnection, listen_host: str, listen_port: int
) -> Any:
    """`ssh -R`: listen on the target, bringing each connection back to the caller."""
    if link.identity.agent:
        log.warning(
            "%r: remote forward %s:%d refused: agents do not forward",
            link,
            listen_host,
            listen_port,
        )
        return False
    if "remote" not in link.target.forwarding:
        log.warning("%r: remote forward %s:%d refused by config", link, listen_host, listen_port)
        return False

    async def incoming(orig_host: str, orig_port: int) -> TcpHalf:
        bridge = ForwardBridge(link, "remote", listen_host, listen_port)
        await bridge.open()
        await caller_conn.create_connection(
            lambda: bridge.caller, listen_host, listen_port, orig_host, orig_port
        )
        return bridge.target

    async def start_listener() -> asyncssh.SSHListener | bool:
        try:
            upstream = await link.ready()
            return await upstream.create_server(incoming, listen_host, listen_port)
        except (asyncssh.Error, OSError, TargetUnavailable) as exc:
            log.warning(
                "%r: remote forward on %s:%d failed: %s", link, listen_host, listen_port, exc
            )
            return False

    return start_listener()
