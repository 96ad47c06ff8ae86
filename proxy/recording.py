"""Starting a gateway session's recording: the one place the data path builds a recording
header from who connected to what, and routes a failing recorder back to the event loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from proxy.auth import Identity
from proxy.config import GatewayConfig
from storage.recorder import RecordingWriter, new_session_id, start_recording
from storage.schema import RecordingHeader


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
) -> RecordingWriter:
    """A new recording for `identity` on `target`; `on_broken` runs on the calling event loop
    when the recorder fails later. Raises RecordingFailed when it cannot start (fail closed)."""
    loop = asyncio.get_running_loop()
    header = RecordingHeader(
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
        extra={"identity_source": identity.source, **(extra or {})},
    )

    def on_failure(exc: BaseException) -> None:
        loop.call_soon_threadsafe(on_broken, exc)

    return start_recording(config.data_dir, header, on_failure=on_failure)
