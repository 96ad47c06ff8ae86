"""SCRAM-SHA-256 (RFC 5802/7677, as PostgreSQL speaks it) for both ends of a login, sans-IO.

`ScramServer` checks a client against a stored verifier (never the password): the gateway's
own login for PostgreSQL clients. `ScramClient` logs the gateway in to a target with its own
credential. `md5_password` is the older upstream method. Channel binding is not offered (the
gateway's TLS is terminated by the gateway itself); a client saying it could bind (`y,,`) is
accepted since the server advertises no -PLUS mechanism.

A verifier has PostgreSQL's own format, `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:
<ServerKey>`; `python -m proxy.pg.scram` reads a password on stdin and prints one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import sys
import unicodedata
from dataclasses import dataclass

MECHANISM = "SCRAM-SHA-256"
DEFAULT_ITERATIONS = 4096


class ScramError(Exception):
    """The exchange failed: a malformed message, a wrong proof or a forged server."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise ScramError("bad base64 in SCRAM message") from None


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def saslprep(password: str) -> str:
    """A light SASLprep (NFKC); PostgreSQL falls back to the raw bytes when it cannot prep,
    and so do we for passwords with prohibited characters."""
    prepared = unicodedata.normalize("NFKC", password)
    if any(unicodedata.category(char) in ("Cc", "Cs", "Co") for char in prepared):
        return password
    return prepared


def salted_password(password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", saslprep(password).encode("utf-8"), salt, iterations)


@dataclass(frozen=True, slots=True)
class Verifier:
    iterations: int
    salt: bytes
    stored_key: bytes
    server_key: bytes

    def encode(self) -> str:
        return (
            f"{MECHANISM}${self.iterations}:{_b64(self.salt)}"
            f"${_b64(self.stored_key)}:{_b64(self.server_key)}"
        )

    @classmethod
    def parse(cls, text: str) -> Verifier:
        try:
            mechanism, params, keys = text.split("$")
            iterations_text, salt_text = params.split(":")
            stored_text, server_text = keys.split(":")
            iterations = int(iterations_text)
        except ValueError:
            raise ScramError("not a SCRAM-SHA-256 verifier") from None
        if mechanism != MECHANISM or not 1 <= iterations <= 10_000_000:
            raise ScramError("not a SCRAM-SHA-256 verifier")
        stored, server = _unb64(stored_text), _unb64(server_text)
        if len(stored) != 32 or len(server) != 32:
            raise ScramError("not a SCRAM-SHA-256 verifier")
        return cls(iterations, _unb64(salt_text), stored, server)


def make_verifier(password: str, iterations: int = DEFAULT_ITERATIONS) -> Verifier:
    salt = secrets.token_bytes(16)
    salted = salted_password(password, salt, iterations)
    client_key = _hmac(salted, b"Client Key")
    return Verifier(iterations, salt, _h(client_key), _hmac(salted, b"Server Key"))


def _attributes(message: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in message.split(","):
        key, sep, value = part.partition("=")
        if not sep or len(key) != 1:
            raise ScramError("malformed SCRAM message")
        out.setdefault(key, value)
    return out


class ScramServer:
    """One login checked against a verifier. A missing user is run against a fake verifier
    (`Verifier` of a random password), so the answer comes out the same way."""

    def __init__(self, verifier: Verifier | None, nonce: str | None = None) -> None:
        self.known = verifier is not None
        self.verifier = verifier or make_verifier(secrets.token_hex(16), DEFAULT_ITERATIONS)
        self.nonce = nonce or _b64(secrets.token_bytes(18))
        self._client_first_bare = ""
        self._server_first = ""
        self._gs2 = ""
        self._combined = ""

    def first(self, client_first: bytes) -> bytes:
        """client-first-message -> server-first-message."""
        try:
            text = client_first.decode("utf-8")
        except UnicodeDecodeError:
            raise ScramError("SCRAM message is not UTF-8") from None
        flag, _, rest = text.partition(",")
        authzid, _, bare = rest.partition(",")
        if flag not in ("n", "y") or authzid:
            raise ScramError("channel binding and authorization ids are not supported")
        attributes = _attributes(bare)
        client_nonce = attributes.get("r", "")
        if not client_nonce or "m" in attributes:
            raise ScramError("malformed SCRAM client-first message")
        self._gs2 = f"{flag},{authzid},"
        self._client_first_bare = bare
        self._combined = client_nonce + self.nonce
        verifier = self.verifier
        self._server_first = f"r={self._combined},s={_b64(verifier.salt)},i={verifier.iterations}"
        return self._server_first.encode("ascii")

    def final(self, client_final: bytes) -> bytes:
        """client-final-message -> server-final-message; ScramError when the proof is wrong."""
        try:
            text = client_final.decode("utf-8")
        except UnicodeDecodeError:
            raise ScramError("SCRAM message is not UTF-8") from None
        without_proof, sep, proof_part = text.rpartition(",p=")
        if not sep:
            raise ScramError("SCRAM client-final message has no proof")
        attributes = _attributes(without_proof)
        if attributes.get("c") != _b64(self._gs2.encode("utf-8")):
            raise ScramError("SCRAM channel binding data does not match")
        if attributes.get("r") != self._combined:
            raise ScramError("SCRAM nonce does not match")
        proof = _unb64(proof_part)
        message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        signature = _hmac(self.verifier.stored_key, message)
        if len(proof) != len(signature):
            raise ScramError("password authentication failed")
        client_key = _xor(proof, signature)
        if not self.known or not hmac.compare_digest(_h(client_key), self.verifier.stored_key):
            raise ScramError("password authentication failed")
        return f"v={_b64(_hmac(self.verifier.server_key, message))}".encode("ascii")


class ScramClient:
    """The gateway logging in to a target with SCRAM-SHA-256."""

    def __init__(self, password: str, nonce: str | None = None) -> None:
        self.password = password
        self.nonce = nonce or _b64(secrets.token_bytes(18))
        self._client_first_bare = f"n=,r={self.nonce}"
        self._server_signature = b""

    def first(self) -> bytes:
        return f"n,,{self._client_first_bare}".encode("ascii")

    def final(self, server_first: bytes) -> bytes:
        try:
            text = server_first.decode("utf-8")
        except UnicodeDecodeError:
            raise ScramError("SCRAM message is not UTF-8") from None
        attributes = _attributes(text)
        combined = attributes.get("r", "")
        if not combined.startswith(self.nonce) or len(combined) <= len(self.nonce):
            raise ScramError("the server's SCRAM nonce does not extend ours")
        try:
            iterations = int(attributes.get("i", ""))
        except ValueError:
            raise ScramError("bad SCRAM iteration count") from None
        if not 1 <= iterations <= 10_000_000:
            raise ScramError("bad SCRAM iteration count")
        salt = _unb64(attributes.get("s", ""))
        salted = salted_password(self.password, salt, iterations)
        client_key = _hmac(salted, b"Client Key")
        without_proof = f"c=biws,r={combined}"
        message = f"{self._client_first_bare},{text},{without_proof}".encode()
        proof = _xor(client_key, _hmac(_h(client_key), message))
        self._server_signature = _hmac(_hmac(salted, b"Server Key"), message)
        return f"{without_proof},p={_b64(proof)}".encode("ascii")

    def verify(self, server_final: bytes) -> None:
        """Raise ScramError unless the server proved it knows the verifier too."""
        try:
            attributes = _attributes(server_final.decode("utf-8"))
        except UnicodeDecodeError:
            raise ScramError("SCRAM message is not UTF-8") from None
        if "e" in attributes:
            raise ScramError(f"the server refused the login: {attributes['e']}")
        signature = _unb64(attributes.get("v", ""))
        if not self._server_signature or not hmac.compare_digest(signature, self._server_signature):
            raise ScramError("the server's SCRAM signature is wrong")


def md5_password(user: str, password: str, salt: bytes) -> bytes:
    """The response to AuthenticationMD5Password, NUL-terminated."""
    inner = hashlib.md5((password + user).encode("utf-8")).hexdigest()
    outer = hashlib.md5(inner.encode("ascii") + salt).hexdigest()
    return b"md5" + outer.encode("ascii") + b"\x00"


def main() -> int:
    """Print the SCRAM verifier of the password read from stdin (for `[postgres.scram]`)."""
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        print("refusing an empty password", file=sys.stderr)
        return 1
    print(make_verifier(password).encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
