"""A TCP listener that takes the PROXY protocol header from trusted balancers only.

A connection from an address in `[gateway] trusted_proxies` must start with a PROXY header (v1
or v2); the caller it names becomes the connection's peer (`get_extra_info("peername")`), so
the SSH and PostgreSQL gateways, their recordings and their login throttling see the caller,
not HAProxy. A connection from anywhere else that starts with a PROXY header, and a malformed
or missing header from a balancer, are refused: the socket is closed before a byte of SSH or
PostgreSQL is spoken.

`start_server(protocol_factory, host, port, trusted)` answers like `loop.create_server` (an
object with `sockets`, `close()`, `wait_closed()`), and `ProxiedTunnel` plugs the same into
`asyncssh.listen(tunnel=...)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from proxy.fleet.proxy_protocol import NeedData, ProxyHeaderError, parse, starts_like_header

log = logging.getLogger("hoop.fleet")

HEADER_TIMEOUT = 5.0  # a balancer sends its header at once; a silent one is dropped
PEEK_TIMEOUT = 1.0  # how long a direct caller's first bytes are awaited before handing over

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_trusted(values: Iterable[str]) -> tuple[Network, ...]:
    """Addresses and networks ("10.0.0.5", "10.0.1.0/24", "::1"); ValueError names a bad one."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not an address or network") from None
    return tuple(networks)


def is_trusted(host: str, trusted: Sequence[Network]) -> bool:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in trusted)


async def _recv_exactly(sock: socket.socket, count: int) -> bytes:
    loop = asyncio.get_running_loop()
    data = b""
    while len(data) < count:
        chunk = await loop.sock_recv(sock, count - len(data))
        if not chunk:
            raise ConnectionResetError("closed before the PROXY header ended")
        data += chunk
    return data


async def read_header(sock: socket.socket) -> tuple[str, int] | None:
    """Read exactly the PROXY header off `sock`: the caller it names, or None when it names
    none (a health check). ProxyHeaderError when it is not one."""
    data = b""
    while True:
        result = parse(data)
        if isinstance(result, NeedData):
            data += await _recv_exactly(sock, result.count)
            continue
        return result.source


async def peek(sock: socket.socket, size: int, timeout: float) -> bytes:
    """Up to `size` bytes the peer sent first, left in the socket; b"" if none in time."""
    loop = asyncio.get_running_loop()
    readable: asyncio.Future[None] = loop.create_future()
    fd = sock.fileno()

    def ready() -> None:
        if not readable.done():
            readable.set_result(None)

    loop.add_reader(fd, ready)
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(readable, timeout)
    finally:
        loop.remove_reader(fd)
    if not readable.done():  # (not select(): a busy gateway has descriptors past 1023)
        return b""
    try:
        return sock.recv(size, socket.MSG_PEEK)
    except BlockingIOError:
        return b""


class PeerTransport:
    """A transport that names the caller as its peer and is otherwise the real one (any loop's,
    uvloop's included, whose transports cannot be changed)."""

    def __init__(self, transport: asyncio.BaseTransport, peer: tuple[str, int]) -> None:
        self._transport = transport
        self._peer = peer

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self._peer
        return self._transport.get_extra_info(name, default)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _with_peer(
    factory: Callable[[], asyncio.BaseProtocol], peer: tuple[str, int]
) -> Callable[[], asyncio.BaseProtocol]:
    """The protocol factory, its protocol handed a transport that answers `peername` with the
    caller's address (for asyncssh: it never upgrades the transport to TLS)."""

    def make() -> asyncio.BaseProtocol:
        protocol = factory()
        made = protocol.connection_made

        def connection_made(transport: asyncio.BaseTransport) -> None:
            made(PeerTransport(transport, peer))  # type: ignore[arg-type]

        protocol.connection_made = connection_made  # type: ignore[method-assign]
        return protocol

    return make


def _peer_writer(
    client_connected: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any],
    peer: tuple[str, int],
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]:
    """For stream servers (PostgreSQL): the writer answers `peername` with the caller's
    address and keeps the real transport, so `start_tls` works on every loop."""

    def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Any:
        real = writer.get_extra_info

        def get_extra_info(name: str, default: Any = None) -> Any:
            return peer if name == "peername" else real(name, default)

        writer.get_extra_info = get_extra_info  # type: ignore[method-assign]
        return client_connected(reader, writer)

    return connected


class ProxiedServer:
    """The listening socket and its accept loop."""

    def __init__(
        self,
        sock: socket.socket,
        factory_for: Callable[[tuple[str, int] | None], Callable[[], asyncio.BaseProtocol]],
        trusted: Sequence[Network],
        header_timeout: float = HEADER_TIMEOUT,
    ) -> None:
        self.sockets = [sock]
        self._factory_for = factory_for
        self._trusted = tuple(trusted)
        self._header_timeout = header_timeout
        self._pending: set[asyncio.Task[None]] = set()
        self._closed = asyncio.Event()
        self._accept_task = asyncio.ensure_future(self._accept_forever())
        self.refused = 0  # connections closed for a bad, missing or untrusted header

    def get_port(self) -> int:
        port: int = self.sockets[0].getsockname()[1]
        return port

    def get_addresses(self) -> list[tuple[Any, ...]]:
        return [sock.getsockname() for sock in self.sockets]

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._accept_task.cancel()
        for task in self._pending:
            task.cancel()
        for sock in self.sockets:
            sock.close()

    async def wait_closed(self) -> None:
        await self._closed.wait()
        with contextlib.suppress(asyncio.CancelledError):
            await self._accept_task

    def is_serving(self) -> bool:
        return not self._closed.is_set()

    async def _accept_forever(self) -> None:
        loop = asyncio.get_running_loop()
        listener = self.sockets[0]
        while True:
            try:
                conn, _ = await loop.sock_accept(listener)
            except OSError as exc:
                if self._closed.is_set():
                    return
                log.warning("accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            task = asyncio.ensure_future(self._handle(conn))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _handle(self, conn: socket.socket) -> None:
        conn.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            peer = conn.getpeername()
        except OSError:  # gone already (a balancer's health check that closed at once)
            conn.close()
            return
        try:
            caller = None
            if is_trusted(str(peer[0]), self._trusted):
                caller = await asyncio.wait_for(read_header(conn), self._header_timeout)
            else:
                first = await peek(conn, 16, PEEK_TIMEOUT)
                if starts_like_header(first):
                    raise ProxyHeaderError(
                        f"a PROXY header from {peer[0]}, which is not in trusted_proxies"
                    )
            await loop.connect_accepted_socket(self._factory_for(caller), conn)
        except (ProxyHeaderError, OSError, TimeoutError) as exc:
            self.refused += 1
            log.warning("connection refused: %s", exc or type(exc).__name__)
            conn.close()
        except asyncio.CancelledError:
            conn.close()
            raise


def _listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host or "0.0.0.0", port), family=family, backlog=1024)
    sock.setblocking(False)
    return sock


async def start_server(
    protocol_factory: Callable[[], asyncio.BaseProtocol],
    host: str,
    port: int,
    trusted: Sequence[Network],
    *,
    header_timeout: float = HEADER_TIMEOUT,
) -> ProxiedServer:
    """`loop.create_server`, behind the PROXY protocol."""

    def factory_for(caller: tuple[str, int] | None) -> Callable[[], asyncio.BaseProtocol]:
        return protocol_factory if caller is None else _with_peer(protocol_factory, caller)

    return ProxiedServer(_listening_socket(host, port), factory_for, trusted, header_timeout)


async def start_stream_server(
    client_connected: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any],
    host: str,
    port: int,
    trusted: Sequence[Network],
    *,
    limit: int = 2**16,
) -> ProxiedServer:
    """`asyncio.start_server`, behind the PROXY protocol."""
    loop = asyncio.get_running_loop()

    def factory_for(caller: tuple[str, int] | None) -> Callable[[], asyncio.BaseProtocol]:
        callback = client_connected if caller is None else _peer_writer(client_connected, caller)

        def factory() -> asyncio.BaseProtocol:
            reader = asyncio.StreamReader(limit=limit, loop=loop)
            return asyncio.StreamReaderProtocol(reader, callback, loop=loop)

        return factory

    return ProxiedServer(_listening_socket(host, port), factory_for, trusted)


class ProxiedTunnel:
    """`asyncssh.listen(tunnel=ProxiedTunnel(trusted))`: asyncssh hands its connection factory
    here instead of listening itself."""

    def __init__(self, trusted: Sequence[Network]) -> None:
        self.trusted = tuple(trusted)

    async def create_server(
        self, session_factory: Callable[[str, int], Any], listen_host: str, listen_port: int
    ) -> ProxiedServer:
        return await start_server(
            lambda: session_factory("", 0), listen_host, listen_port, self.trusted
        )
