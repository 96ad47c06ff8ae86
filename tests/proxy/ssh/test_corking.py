"""Corked transports: the same bytes, in the same order, one write per event-loop turn."""

from __future__ import annotations

import asyncio

from proxy.ssh.corking import CorkedTransport

# Writers of open test connections: a collected writer would close its connection.
_KEPT: list[asyncio.StreamWriter] = []


async def pair() -> tuple[asyncio.Transport, asyncio.StreamReader, asyncio.Server]:
    received: asyncio.Future[asyncio.StreamReader] = asyncio.get_running_loop().create_future()
    kept = _KEPT

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        kept.append(writer)  # a collected writer would close the connection
        received.set_result(reader)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    _, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
    reader = await received
    kept.append(writer)
    return writer.transport, reader, server  # type: ignore[return-value]


async def test_writes_of_one_turn_arrive_together_and_in_order() -> None:
    transport, reader, server = await pair()
    corked = CorkedTransport(transport)
    corked.write(b"one ")
    corked.write(b"two ")
    assert transport.get_write_buffer_size() == 0  # nothing written yet in this turn
    corked.write(b"three")
    corked.close()  # flushes what is pending before closing
    assert await reader.read() == b"one two three"
    server.close()


async def test_abort_drops_what_is_pending() -> None:
    transport, reader, server = await pair()
    corked = CorkedTransport(transport)
    corked.write(b"never sent")
    corked.abort()
    assert await reader.read() == b""
    server.close()
