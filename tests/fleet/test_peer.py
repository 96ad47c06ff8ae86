"""The instance-to-instance channel: only a peer holding the fleet's key gets in, and what
travels is sealed (a changed byte, a replayed frame, the wrong key: refused)."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

import pytest

from proxy.fleet.peer import PeerCodec, PeerError, PeerServer, PeerStream, connect, fleet_secret


def pair(secret: bytes, other: bytes | None = None) -> tuple[PeerCodec, PeerCodec]:
    client, server = PeerCodec(secret, server=False), PeerCodec(other or secret, server=True)
    answer = server.server_answer(client.hello())
    server.server_finish(client.client_finish(answer))
    return client, server


def test_messages_travel_sealed_and_in_order() -> None:
    client, server = pair(secrets.token_bytes(32))
    wire = client.seal({"op": "watch", "id": "abc"}) + client.seal({"n": 2})
    assert b"watch" not in wire and b"abc" not in wire
    server.feed(wire[:7])
    assert server.messages() == []
    server.feed(wire[7:])
    assert server.messages() == [{"op": "watch", "id": "abc"}, {"n": 2}]
    back = server.seal({"data": b"\x00\xff"})
    client.feed(back)
    assert client.messages() == [{"data": b"\x00\xff"}]


def test_a_changed_or_replayed_frame_is_refused() -> None:
    client, server = pair(secrets.token_bytes(32))
    frame = bytearray(client.seal({"op": "watch"}))
    frame[-1] ^= 1
    server.feed(bytes(frame))
    with pytest.raises(PeerError):
        server.messages()
    client, server = pair(secrets.token_bytes(32))
    frame = client.seal({"n": 1})
    server.feed(frame)
    server.messages()
    server.feed(frame)  # the same frame again: its counter is past
    with pytest.raises(PeerError):
        server.messages()


def test_the_wrong_key_fails_both_ways() -> None:
    with pytest.raises(PeerError, match="fleet's key"):
        pair(b"a" * 32, b"b" * 32)


async def test_a_peer_streams_to_another_and_a_stranger_is_refused(tmp_path: Path) -> None:
    secret = fleet_secret(tmp_path / "a")
    assert fleet_secret(tmp_path / "a") == secret  # stable: derived from the signing key

    async def watch(message: dict[str, Any], stream: PeerStream) -> None:
        for n in range(3):
            await stream.send({"event": "session.output", "id": message["id"], "n": n})

    server = PeerServer(secret, {"watch": watch})
    await server.start("127.0.0.1", 0)
    try:
        stream = await connect("127.0.0.1", server.port, secret)
        await stream.send({"op": "watch", "id": "5e55"})
        got = [m async for m in stream]
        assert [m["n"] for m in got] == [0, 1, 2]
        stream.close()
        with pytest.raises(PeerError):
            await connect("127.0.0.1", server.port, fleet_secret(tmp_path / "other"))
        await asyncio.sleep(0.1)
        assert server.refused == 1
    finally:
        await server.stop()
