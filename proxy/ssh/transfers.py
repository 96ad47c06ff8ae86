"""Telling a file transfer from text for a person, by its protocol (sans-IO).

Output masking must leave file transfers byte-exact (a masked card number inside a copied file
is a corrupted file), yet a caller must not switch masking off by naming a transfer program:
`rsync --version >/dev/null; cat cards.txt` is text. So an exec's output is a transfer only
when both hold:

- the command is exactly one server-side transfer program and nothing else: no second command,
  no redirect, no expansion (`scp -f|-t PATH`, `rsync --server ...`, `git-upload-pack PATH`,
  `git-receive-pack PATH`, `git-upload-archive PATH`, `sftp-server`);
- the first bytes the target sends are that protocol's greeting: the legacy scp handshake (a
  NUL or a `C`/`D`/`T` record from the sender), rsync's protocol version (a little-endian
  32-bit number), git's pkt-line length, the SFTP version packet.

Until the greeting has been seen the output is held back (a few bytes); anything else, or an
end before it, and the output is masked like any other. An `sftp` subsystem request is itself
the protocol and needs no sniffing. Standard error is always masked.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

from proxy.shell import ShellAnalysis, analyse_line


class Protocol(enum.Enum):
    SCP_SINK = "scp -t"  # the caller uploads; the target answers with NUL acknowledgements
    SCP_SOURCE = "scp -f"  # the caller downloads; the target sends records and file data
    RSYNC = "rsync --server"
    GIT = "git pack protocol"
    SFTP = "sftp-server"


class Sniff(enum.Enum):
    MORE = "more"  # not enough bytes yet to tell
    TRANSFER = "transfer"  # the protocol's greeting: leave the output byte-exact
    TEXT = "text"  # not the protocol: mask it


_GIT_PROGRAMS = frozenset({"git-upload-pack", "git-receive-pack", "git-upload-archive"})
_GREETING_MAX = 4096  # a greeting longer than this is not one
_SCP_RECORD = re.compile(rb"(?:C[0-7]{4} \d+ [^\n/]+|D[0-7]{4} 0 [^\n/]+|T\d+ \d+ \d+ \d+)\n")


def transfer_protocol(command: str) -> Protocol | None:
    """The transfer protocol an exec command would speak, if it is exactly one server-side
    transfer program with literal arguments (see the module docstring); else None."""
    result = analyse_line(command, interactive=False)
    if not isinstance(result, ShellAnalysis) or len(result.commands) != 1:
        return None
    simple = result.commands[0]
    if simple.opaque is not None or simple.redirects or simple.via:
        return None
    if not all(word.known for word in simple.argv):
        return None
    args = [word.text for word in simple.argv[1:]]
    program = simple.program
    if program == "scp":
        letters = "".join(a[1:] for a in args if a.startswith("-") and not a.startswith("--"))
        if "t" in letters and "f" not in letters:
            return Protocol.SCP_SINK
        if "f" in letters and "t" not in letters:
            return Protocol.SCP_SOURCE
        return None
    if program == "rsync":
        return Protocol.RSYNC if "--server" in args else None
    if program in _GIT_PROGRAMS:
        return Protocol.GIT if len([a for a in args if not a.startswith("-")]) == 1 else None
    if program == "sftp-server":
        return Protocol.SFTP
    return None


@dataclass(slots=True)
class TransferSniffer:
    """Holds back the first bytes of a candidate transfer's output until they show whether
    they are its protocol's greeting."""

    protocol: Protocol
    held: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> Sniff:
        self.held += data
        verdict = _greeting(self.protocol, bytes(self.held))
        if verdict is Sniff.MORE and len(self.held) > _GREETING_MAX:
            return Sniff.TEXT
        return verdict


def _greeting(protocol: Protocol, head: bytes) -> Sniff:
    if not head:
        return Sniff.MORE
    if protocol is Protocol.SCP_SINK:
        if head[:1] == b"\0":
            return Sniff.TRANSFER
        return _scp_error(head)
    if protocol is Protocol.SCP_SOURCE:
        if head[:1] in (b"\x01", b"\x02"):
            return _scp_error(head)
        if head[:1] == b"E":
            return Sniff.MORE if len(head) < 2 else _sniff(head[:2] == b"E\n")
        if head[:1] not in (b"C", b"D", b"T"):
            return Sniff.TEXT
        end = head.find(b"\n")
        if end < 0:
            return Sniff.MORE
        return _sniff(_SCP_RECORD.fullmatch(head[: end + 1]) is not None)
    if protocol is Protocol.RSYNC:
        if len(head) < 4:
            return Sniff.MORE
        version = int.from_bytes(head[:4], "little")
        return _sniff(20 <= version <= 100)
    if protocol is Protocol.GIT:
        if len(head) < 4:
            return Sniff.MORE
        if re.fullmatch(rb"[0-9a-f]{4}", head[:4]) is None:
            return Sniff.TEXT
        length = int(head[:4], 16)
        return _sniff(length in (0, 1, 2) or length >= 4)
    if len(head) < 5:  # SFTP: uint32 length, then SSH_FXP_VERSION (2)
        return Sniff.MORE
    length = int.from_bytes(head[:4], "big")
    return _sniff(head[4] == 2 and 5 <= length <= 256 * 1024)


def _scp_error(head: bytes) -> Sniff:
    """An scp error (`\\1` or `\\2` and a message line) is part of the protocol, but only a
    short one: the message must end within the greeting."""
    if head[:1] not in (b"\x01", b"\x02"):
        return Sniff.TEXT
    end = head.find(b"\n")
    if end < 0:
        return Sniff.MORE
    return Sniff.TRANSFER if end < 1024 else Sniff.TEXT


def _sniff(ok: bool) -> Sniff:
    return Sniff.TRANSFER if ok else Sniff.TEXT
