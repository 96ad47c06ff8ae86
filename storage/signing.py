"""The gateway's Ed25519 recording key: created once in the data directory, used to sign the
hash chain of every recording so an auditor can prove nobody edited it.

The private key stays owner-only in `data_dir/recording_key`; the public half, in OpenSSH
format, goes to `data_dir/recording_key.pub` for whoever verifies recordings.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from storage.private import private_dir, private_file

PRIVATE_KEY_NAME = "recording_key"
PUBLIC_KEY_NAME = "recording_key.pub"
# The key of stable mask tokens, beside the signing key: the gateway makes it, the replay of
# old recordings reads it to mask them with today's rules the same way.
MASK_KEY_NAME = "mask.key"
# Signing keys already read, by path, with the (inode, size, mtime) they were read at.
_LOADED: dict[Path, tuple[tuple[int, int, int], Ed25519PrivateKey]] = {}


class SigningKeyError(Exception):
    """A key file that cannot be read or is not an Ed25519 key."""


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).digest()[:16].hex()


def load_or_create_signing_key(data_dir: Path) -> Ed25519PrivateKey:
    """The data directory's signing key, created (mode 0600) on first use. Every session
    starts by asking for it, so a key already read is reused while its file is unchanged (a
    replaced file is read again)."""
    path = data_dir / PRIVATE_KEY_NAME
    try:
        stat = path.stat()
    except FileNotFoundError:
        pass
    else:
        seen = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        cached = _LOADED.get(path)
        if cached is not None and cached[0] == seen:
            return cached[1]
        key = load_private_key(path)
        _LOADED[path] = (seen, key)
        return key
    private_dir(data_dir)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    if not _create_whole(path, pem):  # another session made it first: that one is the key
        return load_or_create_signing_key(data_dir)
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    public_path = private_file(data_dir / PUBLIC_KEY_NAME)
    public_path.write_bytes(public + b" hoop-tui recording signer\n")
    return key


def load_or_create_mask_key(data_dir: Path) -> bytes:
    """The key of stable mask tokens (a keyed hash), made once, owner-only: tokens let auditors
    correlate masked values across sessions without seeing them."""
    path = data_dir / MASK_KEY_NAME
    if not path.exists():
        private_dir(data_dir)
        _create_whole(path, secrets.token_bytes(32))
    return path.read_bytes()


def _create_whole(path: Path, data: bytes) -> bool:
    """Create `path` (mode 0600) holding `data`, or False when it exists already. Two sessions
    starting at once may both find no key: the file appears whole or not at all (written aside,
    then linked in place), so neither reads a half-written key and only one key is ever used."""
    aside = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.link(aside, path)
    except FileExistsError:
        return False
    finally:
        aside.unlink(missing_ok=True)
    return True


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise SigningKeyError(f"{path}: cannot load the recording signing key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path}: the recording signing key is not an Ed25519 key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """A verifying key from an OpenSSH public key line, a PEM public key, or a PEM private key."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SigningKeyError(f"{path}: cannot read: {exc.strerror}") from None
    loaded: object
    try:
        if data.startswith(b"ssh-ed25519 "):
            loaded = serialization.load_ssh_public_key(b" ".join(data.split()[:2]))
        elif b"PRIVATE KEY" in data:
            private = serialization.load_pem_private_key(data, password=None)
            loaded = private.public_key()
        else:
            loaded = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"{path}: not a readable public key: {exc}") from None
    if not isinstance(loaded, Ed25519PublicKey):
        raise SigningKeyError(f"{path}: not an Ed25519 key")
    return loaded
