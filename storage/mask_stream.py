"""Terminal output masking as a sans-IO stream: feed the bytes a target sent, get the bytes that
are safe to forward now and the masking acts to record.

A secret may arrive cut across packets, so the stream holds back a tail: only the end of what
it has seen that could still be the beginning of a secret (a trailing word, digit group or
`password=` assignment, an unfinished escape sequence or UTF-8 character), at most
`LOOKBEHIND` characters. Everything before it is forwarded at once, masked. The next `feed`
continues with the tail, so a split secret is masked exactly as if it had come in one piece.
When the target goes quiet, the caller calls `flush()`, which releases the tail (masking what
it can see): `QUIET_FLUSH_S` after the last feed. Interactive output (echoed keys, prompts)
therefore waits at most that long; bulk output is not delayed, since every packet pushes out
the previous tail. A secret split by a pause longer than that is not recognised.

Bytes stay bytes to the caller: text is decoded with an incremental UTF-8 decoder in
`surrogateescape` mode, so a character split across packets is decoded whole, invalid bytes
survive unchanged, and every byte outside a secret is forwarded exactly as it came. Escape
sequences are never matched into (see `storage.masking`).

PEM private keys can be far longer than the look-behind: once a `-----BEGIN ... PRIVATE
KEY-----` line has been seen, the stream masks the body as it arrives (every character but
line breaks and escape sequences becomes `*`), holding back only what could be the start of
the END line, until `-----END ... PRIVATE KEY-----`. The act for the block is emitted at the
END line (or at `flush(final=True)`), with the block's whole length and token.

Positions in acts are byte offsets in the stream this object forwarded (the masked stream the
recording stores), starting at `position`; lengths are bytes of the original secret.
"""

from __future__ import annotations

import codecs
import hashlib
import hmac
from dataclasses import dataclass

from storage.masking import (
    LOOKBEHIND,
    PARTIAL_ESCAPE,
    TOKEN_HEX,
    TOKEN_PREFIX,
    MaskAct,
    Masker,
    MaskHit,
    pem_end_search,
    pem_end_tail,
    star_text,
)

# How long the target must be quiet before the held tail is released. Bulk output comes in
# bursts with gaps well under a millisecond; a person reads echo within ~10 ms without
# noticing. 2 ms keeps the extra latency of interactive output under the 5 ms goal (p99)
# with asyncio's millisecond timer resolution. The caller owns the timer.
QUIET_FLUSH_S = 0.002
CONTEXT = 64  # characters of released text kept so lookbehinds see what came before


def _bytes_len(text: str) -> int:
    if text.isascii():
        return len(text)
    return len(text.encode("utf-8", "surrogateescape"))


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


@dataclass(slots=True)
class _OpenBlock:
    """A PEM block whose END line has not arrived yet."""

    rule: str
    position: int  # byte offset of the body in the forwarded stream
    length: int
    digest: hmac.HMAC


class MaskStream:
    """One output stream (one channel). Not thread-safe; use from the event loop."""

    def __init__(self, masker: Masker, *, lookbehind: int = LOOKBEHIND, position: int = 0) -> None:
        self.masker = masker
        self.lookbehind = lookbehind
        self.position = position
        self._decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        self._context = ""
        self._pending = ""
        self._block: _OpenBlock | None = None

    @property
    def held(self) -> int:
        """How many characters (plus bytes of an unfinished character) are held back."""
        return len(self._pending) + len(self._decoder.getstate()[0])

    def copy(self) -> MaskStream:
        """An independent stream in the same state (replay keeps one per frame boundary)."""
        other = MaskStream(self.masker, lookbehind=self.lookbehind, position=self.position)
        other._decoder.setstate(self._decoder.getstate())
        other._context = self._context
        other._pending = self._pending
        block = self._block
        if block is not None:
            other._block = _OpenBlock(block.rule, block.position, block.length, block.digest.copy())
        return other

    def feed(self, data: bytes) -> tuple[bytes, list[MaskAct]]:
        """Bytes safe to forward now, and the acts for them."""
        if not self.masker.masks_text:
            self.position += len(data)
            return data, []
        return self._process(self._decoder.decode(data), release=False)

    def flush(self, *, final: bool = False) -> tuple[bytes, list[MaskAct]]:
        """Release the held tail (after `QUIET_FLUSH_S` of quiet). `final=True` at the end of
        the stream also releases an unfinished UTF-8 character and closes an open PEM block."""
        if not self.masker.masks_text:
            return b"", []
        new = ""
        if final:
            new = self._decoder.decode(b"", final=True)
            self._decoder.reset()
        return self._process(new, release=True, final=final)

    def _process(
        self, new: str, *, release: bool, final: bool = False
    ) -> tuple[bytes, list[MaskAct]]:
        text = self._context + self._pending + new
        pos = len(self._context)
        out: list[str] = []
        acts: list[MaskAct] = []
        emitted = self.position

        def emit(part: str) -> None:
            nonlocal emitted
            out.append(part)
            emitted += _bytes_len(part)

        masker = self.masker
        while True:
            block = self._block
            if block is not None:
                pos, emitted, done = self._in_block(block, text, pos, final, out, acts, emitted)
                if done:
                    break
                continue
            hits = masker.find(text, pos)
            # ASCII (most terminal output): characters are bytes, `len` measures them
            measure = len if text.isascii() else _bytes_len
            if hits and hits[-1].open:
                opener = hits[-1]
                rendered, found = masker.render(
                    text, pos, opener.vstart, hits[:-1], measure, offset=emitted
                )
                acts.extend(found)
                emit(rendered)
                digest = hmac.new(masker.secret, digestmod=hashlib.sha256)
                self._block = _OpenBlock(opener.finder.rule.name, emitted, 0, digest)
                pos = opener.vstart
                continue
            cut = len(text) if release else self._hold(text, pos, hits)
            final_hits = [hit for hit in hits if hit.end <= cut]
            rendered, found = masker.render(text, pos, cut, final_hits, measure, offset=emitted)
            acts.extend(found)
            emit(rendered)
            pos = cut
            break
        self._pending = text[pos:]
        self._context = text[max(0, pos - CONTEXT) : pos]
        data = _encode("".join(out))
        self.position = emitted
        return data, acts

    def _in_block(
        self,
        block: _OpenBlock,
        text: str,
        pos: int,
        final: bool,
        out: list[str],
        acts: list[MaskAct],
        emitted: int,
    ) -> tuple[int, int, bool]:
        """Go on inside an open PEM block: its body is starred up to the END line (what may
        begin that line, or an unfinished escape sequence, is held), and the block's act is
        made when it ends. Returns the new position, the bytes emitted so far, and whether
        this call's text is used up."""
        end = pem_end_search(text, pos)
        if end is not None:
            stop = end.start()
        elif final:
            stop = len(text)
        else:
            stop = pem_end_tail(text, pos)
            escape = text.rfind("\x1b", pos)
            if 0 <= escape < stop and PARTIAL_ESCAPE.match(text, escape):
                stop = escape
        body = text[pos:stop]
        block.digest.update(_encode(body))
        block.length += _bytes_len(body)
        starred = star_text(body)
        out.append(starred)
        emitted += _bytes_len(starred)
        if end is None and not final:
            return stop, emitted, True
        token = TOKEN_PREFIX + block.digest.hexdigest()[:TOKEN_HEX]
        acts.append(MaskAct(block.rule, block.position, block.length, token))
        self._block = None
        if end is None:
            return stop, emitted, True
        line = text[end.start() : end.end()]
        out.append(line)
        return end.end(), emitted + _bytes_len(line), False

    def _hold(self, text: str, pos: int, hits: list[MaskHit]) -> int:
        size = len(text)
        cut = self.masker.hold_from(text, pos)
        for hit in hits:
            # a hit reaching the held tail may go on in it (past a NUL, a zero-width space)
            if hit.end >= cut or hit.start < cut < hit.end:
                cut = min(cut, hit.start)
        if size - cut > self.lookbehind:
            cut = size - self.lookbehind
            for hit in hits:
                if hit.start < cut < hit.end:
                    cut = hit.end
        return max(cut, pos)
