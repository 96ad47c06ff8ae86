"""Lean SSH writes: corked transports send the same bytes in the same order, one write per
event-loop turn; AEAD ciphers carry no chaff packets, other ciphers keep them."""

from __future__ import annotations

import asyncio

from proxy.ssh.corking import CorkedTransport
from tests.fixtures.gateway import GatewayHarness

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


async def ignored_packets_received(harness: GatewayHarness, cipher: str) -> int:
    """How many SSH_MSG_IGNORE packets a real `ssh -vvv` received from the gateway (and through
    it, from the target) while running a command that prints a few lines."""
    result = await harness.run(
        "ssh",
        "-vvv",
        "-c",
        cipher,
        "-p",
        str(harness.port),
        "alice+web1@127.0.0.1",
        "for i in 1 2 3 4 5; do echo line $i; done",
        user="alice",
    )
    assert (result.status, result.out.count("line")) == (0, 5), result.err
    return result.err.count("Received SSH2_MSG_IGNORE")


async def test_no_chaff_packets_under_an_aead_cipher(harness: GatewayHarness) -> None:
    harness.add_user("alice", groups=("dev",))
    harness.add_target("web1")
    await harness.start()
    assert await ignored_packets_received(harness, "aes128-gcm@openssh.com") == 0
    assert await ignored_packets_received(harness, "chacha20-poly1305@openssh.com") == 0


async def test_chaff_packets_are_kept_under_other_ciphers(harness: GatewayHarness) -> None:
    harness.add_user("alice", groups=("dev",))
    harness.add_target("web1")
    await harness.start()
    assert await ignored_packets_received(harness, "aes128-ctr") >= 5
