"""The instance-to-instance channel: an approver on instance B watches a live session carried by
instance A, through A.

Authentication without a new secret to distribute: every instance of a fleet must hold the same
recording signing key (the start refuses otherwise), so the channel key is derived from it
(HKDF-SHA256). A connection proves knowledge of that key both ways (HMAC over both sides'
nonces), then every message travels sealed with AES-256-GCM under a per-direction key derived
from both nonces, with a counter as nonce: nothing on the wire is readable, replayable from
another connection, reordered or forged by someone without the fleet's key.

`PeerCodec` is sans-IO (handshake steps and frames, bytes in and out); `PeerServer` and
`peer_watch` are the asyncio shells. Messages are msgpack maps.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgpack
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

log = logging.getLogger("hoop.fleet.peer")

MAGIC = b"HOOPPEER1"
NONCE_SIZE = 32
MAX_FRAME = 1 << 20
HANDSHAKE_TIMEOUT = 5.0


class PeerError(Exception):
    """A peer that failed to authenticate, or a frame that does not open: the connection ends."""


def fleet_secret(data_dir: Path) -> bytes:
    """The channel key of this fleet, derived from the recording signing key every instance
    shares (storage/signing.py)."""
    from storage.signing import load_or_create_signing_key

    key = load_or_create_signing_key(data_dir)
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return _hkdf(raw, b"", b"hoop-tui peer channel v1")


def _hkdf(key: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt or None, info=info).derive(key)


def _proof(secret: bytes, role: bytes, client_nonce: bytes, server_nonce: bytes) -> bytes:
    return hmac.new(secret, role + client_nonce + server_nonce, hashlib.sha256).digest()


class PeerCodec:
    """One side of a channel, sans-IO. The client calls `hello()`, sends it, feeds the server's
    answer to `client_finish()` and sends what it returns; the server feeds the hello to
    `server_answer()`, sends the answer, and feeds the client's proof to `server_finish()`.
    Then `seal(message)` gives bytes to send and `feed(data)` / `messages()` open what came."""

    def __init__(self, secret: bytes, *, server: bool) -> None:
        self._secret = secret
        self._server = server
        self._mine = secrets.token_bytes(NONCE_SIZE)
        self._theirs = b""
        self._send: AESGCM | None = None
        self._recv: AESGCM | None = None
        self._send_counter = 0
        self._recv_counter = 0
        self._buffer = bytearray()

    # -- handshake -----------------------------------------------------------------------------

    def hello(self) -> bytes:
        return MAGIC + self._mine

    def server_answer(self, hello: bytes) -> bytes:
        if len(hello) != len(MAGIC) + NONCE_SIZE or not hello.startswith(MAGIC):
            raise PeerError("not a hoop-tui peer")
        self._theirs = hello[len(MAGIC) :]
        return self._mine + _proof(self._secret, b"server", self._theirs, self._mine)

    def client_finish(self, answer: bytes) -> bytes:
        if len(answer) != NONCE_SIZE + 32:
            raise PeerError("malformed answer from the peer")
        self._theirs, proof = answer[:NONCE_SIZE], answer[NONCE_SIZE:]
        expected = _proof(self._secret, b"server", self._mine, self._theirs)
        if not hmac.compare_digest(proof, expected):
            raise PeerError("the peer does not hold this fleet's key")
        self._keys(client_nonce=self._mine, server_nonce=self._theirs)
        return _proof(self._secret, b"client", self._mine, self._theirs)

    def server_finish(self, proof: bytes) -> None:
        expected = _proof(self._secret, b"client", self._theirs, self._mine)
        if not hmac.compare_digest(proof, expected):
            raise PeerError("the peer does not hold this fleet's key")
        self._keys(client_nonce=self._theirs, server_nonce=self._mine)

    def _keys(self, *, client_nonce: bytes, server_nonce: bytes) -> None:
        salt = client_nonce + server_nonce
        to_server = AESGCM(_hkdf(self._secret, salt, b"client to server"))
        to_client = AESGCM(_hkdf(self._secret, salt, b"server to client"))
        self._send, self._recv = (to_client, to_server) if self._server else (to_server, to_client)

    # -- frames --------------------------------------------------------------------------------

    def seal(self, message: dict[str, Any]) -> bytes:
        if self._send is None:
            raise PeerError("the handshake has not finished")
        nonce = struct.pack("!4xQ", self._send_counter)
        self._send_counter += 1
        body = self._send.encrypt(nonce, msgpack.packb(message, use_bin_type=True), None)
        return struct.pack("!I", len(body)) + body

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def messages(self) -> list[dict[str, Any]]:
        if self._recv is None:
            raise PeerError("the handshake has not finished")
        found = []
        while len(self._buffer) >= 4:
            (size,) = struct.unpack_from("!I", self._buffer)
            if size > MAX_FRAME:
                raise PeerError("frame too large")
            if len(self._buffer) < 4 + size:
                break
            body = bytes(self._buffer[4 : 4 + size])
            del self._buffer[: 4 + size]
            nonce = struct.pack("!4xQ", self._recv_counter)
            self._recv_counter += 1
            try:
                plain = self._recv.decrypt(nonce, body, None)
                message = msgpack.unpackb(plain, raw=False)
            except Exception:
                raise PeerError("a frame that does not open") from None
            if not isinstance(message, dict):
                raise PeerError("a frame that is not a map")
            found.append(message)
        return found


# -- asyncio shells ----------------------------------------------------------------------------


class PeerStream:
    """An authenticated connection: `send(message)`, `async for message in stream`."""

    def __init__(
        self, codec: PeerCodec, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.codec = codec
        self.reader = reader
        self.writer = writer

    async def send(self, message: dict[str, Any]) -> None:
        self.writer.write(self.codec.seal(message))
        await self.writer.drain()

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            data = await self.reader.read(65536)
            if not data:
                return
            self.codec.feed(data)
            for message in self.codec.messages():
                yield message

    def close(self) -> None:
        self.writer.close()


async def connect(host: str, port: int, secret: bytes) -> PeerStream:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), HANDSHAKE_TIMEOUT)
    try:
        codec = PeerCodec(secret, server=False)
        writer.write(codec.hello())
        answer = await asyncio.wait_for(reader.readexactly(NONCE_SIZE + 32), HANDSHAKE_TIMEOUT)
        writer.write(codec.client_finish(answer))
        await writer.drain()
    except (OSError, asyncio.IncompleteReadError, TimeoutError, PeerError):
        writer.close()
        raise
    return PeerStream(codec, reader, writer)


Handler = Callable[[dict[str, Any], PeerStream], Awaitable[None]]


class PeerServer:
    """Accepts authenticated peers; each first message names an `op` with a handler."""

    def __init__(self, secret: bytes, handlers: dict[str, Handler]) -> None:
        self.secret = secret
        self.handlers = handlers
        self.server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.refused = 0

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def start(self, host: str, port: int) -> None:
        self.server = await asyncio.start_server(self._accept, host, port, reuse_address=True)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        codec = PeerCodec(self.secret, server=True)
        peer = writer.get_extra_info("peername")
        try:
            hello = await asyncio.wait_for(
                reader.readexactly(len(MAGIC) + NONCE_SIZE), HANDSHAKE_TIMEOUT
            )
            writer.write(codec.server_answer(hello))
            proof = await asyncio.wait_for(reader.readexactly(32), HANDSHAKE_TIMEOUT)
            codec.server_finish(proof)
        except (OSError, asyncio.IncompleteReadError, TimeoutError, PeerError) as exc:
            self.refused += 1
            log.warning("peer connection from %s refused: %s", peer, exc or type(exc).__name__)
            writer.close()
            return
        stream = PeerStream(codec, reader, writer)
        try:
            async for message in stream:
                handler = self.handlers.get(str(message.get("op")))
                if handler is None:
                    await stream.send({"error": f"unknown op {message.get('op')!r}"})
                    break
                await handler(message, stream)
                break  # one operation per connection
        except (OSError, PeerError) as exc:
            log.warning("peer connection from %s ended: %s", peer, exc)
        finally:
            writer.close()
