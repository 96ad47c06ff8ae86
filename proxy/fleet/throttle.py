"""Failed logins counted across a fleet: an attacker balanced over N instances must not get N
times the guesses.

`FleetThrottle` is the gateway's `LoginThrottle` (proxy/auth.py), unchanged in what it decides,
which also writes each failure to the shared state (`note_login_failure`, keys
"person:<name>" and "address:<net>") and, at every heartbeat, raises its own counts to what the
whole fleet has seen (`pull`). Deciding stays local and synchronous, so a slow or absent
database never delays a login; what other instances saw arrives within one heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from typing import Any

from proxy.auth import LoginThrottle, address_key
from proxy.names import fold_name
from storage.state import StoreUnavailable

log = logging.getLogger("hoop.fleet")


class FleetThrottle(LoginThrottle):
    """See the module docstring. Build it with `FleetThrottle.like(local, store)`."""

    store: Any
    tasks: set[asyncio.Task[None]]  # its writes to the shared store still in flight

    @classmethod
    def like(cls, local: LoginThrottle, store: Any) -> FleetThrottle:
        settings = {f.name: getattr(local, f.name) for f in dataclasses.fields(local) if f.init}
        throttle = cls(**settings)
        throttle.store = store
        throttle.tasks = set()
        return throttle

    def _spawn(self, work: Any) -> None:
        async def run() -> None:
            with contextlib.suppress(StoreUnavailable):
                await work

        task = asyncio.get_running_loop().create_task(run())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def failed(self, key: tuple[str, str]) -> int:
        failures = super().failed(key)
        now = time.time()
        for shared in (f"person:{fold_name(key[1])}", f"address:{address_key(key[0])}"):
            self._spawn(self.store.note_login_failure(shared, now, self.forget_after))
        return failures

    def succeeded(self, key: tuple[str, str]) -> None:
        super().succeeded(key)
        self._spawn(self.store.clear_login_failures(f"person:{fold_name(key[1])}"))

    async def pull(self) -> None:
        """Raise each local count to the fleet's (failures within `forget_after`)."""
        counts: dict[str, int] = await self.store.login_failure_counts(
            time.time() - self.forget_after
        )
        people: dict[str, int] = {}
        addresses: dict[str, int] = {}
        for shared, count in counts.items():
            kind, _, name = shared.partition(":")
            (people if kind == "person" else addresses)[name] = count
        self.raise_counts(people, addresses)
