"""Starting a gateway session's recording: the one place the data path builds a recording
header from who connected to what, and routes a failing recorder back to the event loop.

It is also where what the caller *sends* is masked before it is written (`TypedSecrets`, the
writer's filter): what a person types (`input`), the commands and statements judged (`exec`,
`command`, `hold_requested`, `sql_statement`) go through the same detectors as output, and
keys typed at a password prompt (`Password: `, `[sudo] password for alice: `, a passphrase,
PIN or token prompt: the terminal does not echo them) are stored as `[redacted]`, masks or no
masks. Typed input is masked as a stream per channel, so a card number typed one key at a time
is found as a whole; a possible secret's start waits in the filter until the keys after it
tell (it is written later, never dropped, at the latest when the channel closes).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxy.auth import Identity
from proxy.config import GatewayConfig
from replay.search import index_when_closed
from storage.catalogue import SqliteCatalogue
from storage.mask_stream import MaskStream
from storage.masking import Masker, MaskPolicy
from storage.recorder import RecordingWriter, new_session_id, start_recording
from storage.schema import EventType, RecordingHeader
from storage.signing import load_or_create_mask_key as mask_secret

REDACTED = b"[redacted]"
# The end of a line of output that asks for something the terminal will not echo.
PASSWORD_PROMPT = re.compile(
    rb"(pass(word|phrase|code)?|pass phrase|\bPIN\b|token|secret|otp|verification code)"
    rb"[^\n]{0,80}[:?>]\s*$",
    re.IGNORECASE,
)
PROMPT_TAIL = 160  # bytes of the last output line kept to recognise a prompt
ENDS_SECRET = frozenset(b"\r\n\x03\x04")  # Enter, Ctrl-C, Ctrl-D end what was typed
MIN_REPEATED = 4  # a silent answer this long is redacted where it is repeated; "y" is not


@dataclass(slots=True)
class _Channel:
    tail: bytes = b""  # the last output line so far
    secret: bool = False  # a password prompt was shown: keys typed now may not be echoed
    typed: bytearray = field(default_factory=bytearray)  # keys since, held to see if echoed
    stream: MaskStream | None = None
    # the last silent answer, until the caller's next line: what repeats it (the gate's notice
    # when it judged the answer as a command line, a program printing it) is redacted too
    answer: bytes = b""


@dataclass(slots=True)
class TypedSecrets:
    """The recording's filter: masks what the caller sent before it is written. `masker` is
    the caller's masking rules on this target (None: only prompts are redacted)."""

    masker: Masker | None
    _channels: dict[int, _Channel] = field(default_factory=dict)

    def __call__(
        self, kind: EventType, fields: tuple[Any, ...]
    ) -> list[tuple[EventType, tuple[Any, ...]]]:
        if kind is EventType.OUTPUT:
            return [*self._output(fields), (kind, self._unrepeated(fields, 1))]
        if kind is EventType.INPUT and len(fields) >= 2 and isinstance(fields[1], bytes):
            return self._input(fields[0], fields[1])
        elif kind is EventType.CHANNEL_CLOSE and fields:
            return [*self._flush(fields[0]), (kind, fields)]
        elif kind is EventType.EXEC:
            return [(kind, self._masked(fields, 1))]
        elif kind is EventType.COMMAND:
            return [(kind, self._unrepeated(self._masked(fields, 2), 2))]
        elif kind is EventType.HOLD_REQUESTED:
            return [(kind, self._masked(fields, 1))]
        elif kind is EventType.SQL_STATEMENT:
            masked = self._masked(fields, 0)
            if len(masked) > 1 and isinstance(masked[1], list | tuple):
                params = [self._text(value) for value in masked[1]]
                masked = (masked[0], params, *masked[2:])
            return [(kind, masked)]
        return [(kind, fields)]

    def _channel(self, number: int) -> _Channel:
        channel = self._channels.get(number)
        if channel is None:
            channel = self._channels[number] = _Channel()
            if self.masker is not None and self.masker.masks_text:
                channel.stream = MaskStream(self.masker)
        return channel

    def _output(self, fields: tuple[Any, ...]) -> list[tuple[EventType, tuple[Any, ...]]]:
        """Watch for a password prompt; keys held since one that the output echoes were not
        secret after all, and are written (masked) before this output."""
        if len(fields) < 2 or not isinstance(fields[1], bytes | bytearray | memoryview):
            return []
        number, data = fields[0], bytes(fields[1])
        channel = self._channel(number)
        released: list[tuple[EventType, tuple[Any, ...]]] = []
        if channel.secret and channel.typed and _echoes(data, channel.typed):
            typed, channel.typed, channel.secret = bytes(channel.typed), bytearray(), False
            released = self._plain(number, channel, typed)
        data = data[-PROMPT_TAIL:]
        cut = max(data.rfind(b"\n"), data.rfind(b"\r"))
        tail = data[cut + 1 :] if cut >= 0 else (channel.tail + data)[-PROMPT_TAIL:]
        channel.tail = tail
        if PASSWORD_PROMPT.search(tail):
            channel.secret = True
        return released

    def _input(self, number: int, data: bytes) -> list[tuple[EventType, tuple[Any, ...]]]:
        channel = self._channel(number)
        if not channel.secret:
            return self._plain(number, channel, data)
        # After a password prompt, keys are held until the output echoes them (not a secret
        # then) or Enter (or Ctrl-C, Ctrl-D) ends an answer nobody saw: that is written as
        # `[redacted]`, whatever its length.
        end = next((i for i, byte in enumerate(data) if byte in ENDS_SECRET), None)
        if end is None:
            channel.typed += data
            return []
        answered = bool(channel.typed) or end > 0
        answer = bytes(channel.typed) + data[:end]
        channel.typed, channel.secret = bytearray(), False
        recorded = [(EventType.INPUT, (number, REDACTED))] if answered else []
        recorded += self._plain(number, channel, data[end:])
        if len(answer.strip()) >= MIN_REPEATED and not ENDS_SECRET & set(data[end + 1 :]):
            channel.answer = answer.strip()
        return recorded

    def _plain(
        self, number: int, channel: _Channel, data: bytes
    ) -> list[tuple[EventType, tuple[Any, ...]]]:
        if ENDS_SECRET & set(data):
            channel.answer = b""  # the caller's next line
        recorded = bytearray()
        if channel.stream is not None:
            out, _ = channel.stream.feed(data)
            recorded += out
        else:
            recorded += data
        return [(EventType.INPUT, (number, bytes(recorded)))] if recorded else []

    def _flush(self, number: int) -> list[tuple[EventType, tuple[Any, ...]]]:
        channel = self._channels.pop(number, None)
        if channel is None:
            return []
        events = [(EventType.INPUT, (number, REDACTED))] if channel.typed else []
        if channel.stream is not None:
            out, _ = channel.stream.flush(final=True)
            events += [(EventType.INPUT, (number, out))] if out else []
        return events

    def _unrepeated(self, fields: tuple[Any, ...], index: int) -> tuple[Any, ...]:
        """`fields` with the channel's last silent answer redacted from `fields[index]`."""
        channel = self._channels.get(fields[0]) if fields else None
        if channel is None or not channel.answer or len(fields) <= index:
            return fields
        value = fields[index]
        if isinstance(value, bytes | bytearray | memoryview):
            value = bytes(value).replace(channel.answer, REDACTED)
        elif isinstance(value, str):
            answer = channel.answer.decode("utf-8", "replace")
            value = value.replace(answer, REDACTED.decode())
        return (*fields[:index], value, *fields[index + 1 :])

    def _masked(self, fields: tuple[Any, ...], index: int) -> tuple[Any, ...]:
        if len(fields) <= index:
            return fields
        return (*fields[:index], self._text(fields[index]), *fields[index + 1 :])

    def _text(self, value: Any) -> Any:
        if self.masker is None or not self.masker.masks_text:
            return value
        if isinstance(value, str):
            return self.masker.mask_text(value)[0]
        if isinstance(value, bytes):
            text = value.decode("utf-8", "surrogateescape")
            return self.masker.mask_text(text)[0].encode("utf-8", "surrogateescape")
        return value


def _echoes(output: bytes, typed: bytes | bytearray) -> bool:
    """Whether `output` shows keys that were typed (their echo): the last printable one."""
    printable = [byte for byte in typed if 0x20 < byte < 0x7F]
    return bool(printable) and bytes([printable[-1]]) in output


_MASK_POLICIES: dict[int, tuple[GatewayConfig, MaskPolicy]] = {}


def typed_secrets(config: GatewayConfig, identity: Identity, target: str) -> TypedSecrets:
    """The filter for one session: this caller's masks on this target, from the config."""
    known = _MASK_POLICIES.get(id(config))
    if known is None or known[0] is not config:
        policy = MaskPolicy.from_raw_config(config.raw, config.path, mask_secret(config.data_dir))
        known = _MASK_POLICIES[id(config)] = (config, policy)
    return TypedSecrets(known[1].for_caller(identity.groups, target))


RecordingFilter = Callable[[EventType, tuple[Any, ...]], list[tuple[EventType, tuple[Any, ...]]]]

# One catalogue per data directory, opened (schema and all) once rather than per session;
# it gives each thread its own connection, so the worker threads that open recordings and the
# writer threads that finish them share it.
_CATALOGUES: dict[Path, SqliteCatalogue] = {}


def _catalogue(data_dir: Path) -> SqliteCatalogue:
    found = _CATALOGUES.get(data_dir)
    if found is None or not found.path.exists():
        found = _CATALOGUES[data_dir] = SqliteCatalogue.in_data_dir(data_dir)
    return found


def session_header(
    config: GatewayConfig,
    identity: Identity,
    target: str,
    protocol: str,
    client: str,
    *,
    term: str = "",
    cols: int = 0,
    rows: int = 0,
    extra: dict[str, Any] | None = None,
) -> RecordingHeader:
    """The header of a new session of `identity` on `target`: who, where, when, from where."""
    return RecordingHeader(
        session_id=new_session_id(),
        user=identity.name,
        target=target,
        protocol=protocol,
        started_at_us=time.time_ns() // 1000,
        client=client,
        service_account=identity.service_account,
        term=term,
        cols=cols,
        rows=rows,
        gateway_id=config.gateway_id,
        extra={"identity_source": identity.source, **identity.describe_caller(), **(extra or {})},
    )


def open_session_recording(
    config: GatewayConfig,
    identity: Identity,
    header: RecordingHeader,
    on_failure: Callable[[BaseException], None],
) -> RecordingWriter:
    """Open and catalogue the recording of `header`, with the caller's typed-secrets filter
    as `writer.filter`. Blocking (key, file, catalogue row): the data path calls it in a
    worker thread. `on_failure` runs on the writer thread when the recorder fails later.
    Raises RecordingFailed when it cannot start (fail closed)."""
    writer = start_recording(
        config.data_dir,
        header,
        on_failure=on_failure,
        catalogue=_catalogue(config.data_dir),
        after_close=index_when_closed(config.data_dir),
        store=config.recordings,
    )
    writer.filter = typed_secrets(config, identity, header.target)
    return writer


def start_session_recording(
    config: GatewayConfig,
    identity: Identity,
    target: str,
    protocol: str,
    client: str,
    on_broken: Callable[[BaseException], None],
    *,
    term: str = "",
    cols: int = 0,
    rows: int = 0,
    extra: dict[str, Any] | None = None,
    loop: asyncio.AbstractEventLoop | None = None,
) -> RecordingWriter:
    """A new recording for `identity` on `target`; `on_broken` runs on the calling event loop
    (or `loop`, when this is called from a worker thread to keep the file, key and catalogue
    work off the loop) when the recorder fails later. Raises RecordingFailed when it cannot
    start (fail closed). New code uses `proxy.session.GatewaySession` instead."""
    loop = loop or asyncio.get_running_loop()
    header = session_header(
        config, identity, target, protocol, client, term=term, cols=cols, rows=rows, extra=extra
    )

    def on_failure(exc: BaseException) -> None:
        loop.call_soon_threadsafe(on_broken, exc)

    return open_session_recording(config, identity, header, on_failure)
