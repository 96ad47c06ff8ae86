"""Masking what a shell or command prints, before the caller (or the recording) sees it.

One `OutputMasking` per bridged session channel whose caller has masking rules on the target
(`proxy.ssh.channels.CallerChannel` makes it). Output is masked as a stream per data type
(stdout, stderr), so a secret split across packets is still found; the start of a possible
secret is held until the bytes after it tell, and let out after `QUIET_FLUSH_S` of quiet
from the target so interactive output never waits.

File transfers (sftp, scp, rsync, git) are left byte-exact, but only once their protocol shows
(`proxy.ssh.transfers`): a command's name proves nothing, so the first bytes of a possible
transfer wait in a sniffer until its greeting is complete or disproved.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from proxy.ssh.transfers import Sniff, TransferSniffer, transfer_protocol
from storage.mask_stream import QUIET_FLUSH_S, MaskStream
from storage.masking import MaskAct, Masker

# Record and forward masked output (the acts first); False when it was not delivered.
Deliver = Callable[[bytes, list[MaskAct], int | None], bool]


class OutputMasking:
    """The masking state of one channel's output. `held_back()` says whether the gateway
    itself holds the target back now (caller or recorder behind)."""

    def __init__(
        self,
        masker: Masker,
        command: str | None,
        deliver: Deliver,
        held_back: Callable[[], bool],
    ) -> None:
        self.masker = masker
        self.deliver = deliver
        self.held_back = held_back
        protocol = transfer_protocol(command) if command is not None else None
        # a possible file transfer, not yet told
        self.sniffer = TransferSniffer(protocol) if protocol is not None else None
        self.transfer = False  # the output is a file transfer's protocol: left byte-exact
        self.streams: dict[int | None, MaskStream] = {}
        self.output_bytes = 0  # masked output delivered so far: where the next act is
        self._timer: asyncio.TimerHandle | None = None

    def applies(self, datatype: int | None) -> bool:
        """Whether this output is masked (stderr always; stdout unless it is a transfer)."""
        return bool(datatype) or not self.transfer

    def sniff(self, data: bytes) -> bytes:
        """Hold a candidate transfer's first bytes until they show its protocol's greeting;
        what is let out then goes byte-exact (a transfer) or masked (anything else)."""
        assert self.sniffer is not None
        verdict = self.sniffer.feed(data)
        if verdict is Sniff.MORE:
            return b""
        held, self.sniffer = bytes(self.sniffer.held), None
        self.transfer = verdict is Sniff.TRANSFER
        return held

    def end_sniff(self) -> bytes:
        """The output ended before its greeting was complete: not a transfer; what was held
        is returned, to be masked."""
        if self.sniffer is None:
            return b""
        held, self.sniffer = bytes(self.sniffer.held), None
        return held

    def feed(self, data: bytes, datatype: int | None) -> None:
        stream = self.streams.get(datatype)
        if stream is None:
            stream = self.streams[datatype] = MaskStream(self.masker)
        stream.position = self.output_bytes
        out, acts = stream.feed(data)
        self._deliver(out, acts, datatype)
        self.cancel_quiet_flush()
        self.arm_quiet_flush()

    def arm_quiet_flush(self) -> None:
        """Let a held possible secret out after `QUIET_FLUSH_S` of quiet from the target, so
        interactive output never waits. Not while the gateway itself holds the target back
        (caller or recorder behind): that quiet says nothing about where the output ends, and
        releasing the start of a secret there would let it through once the rest arrives."""
        if self.held_back() or self._timer is not None:
            return
        if any(stream.held for stream in self.streams.values()):
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(QUIET_FLUSH_S, self.flush)

    def cancel_quiet_flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def flush(self, final: bool = False) -> None:
        """Quiet for a moment (or the end): let out what was held back as a possible secret."""
        self._timer = None
        for datatype, stream in self.streams.items():
            stream.position = self.output_bytes
            out, acts = stream.flush(final=final)
            if out or acts:
                self._deliver(out, acts, datatype)

    def _deliver(self, out: bytes, acts: list[MaskAct], datatype: int | None) -> None:
        if self.deliver(out, acts, datatype):
            self.output_bytes += len(out)
