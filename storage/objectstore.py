"""Recordings in S3-compatible object storage: the `[recordings]` settings, where a recording's
objects live, and reading one back with ranged GETs.

A recording stored at `s3://bucket/prefix/YYYY/MM/DD/<session id>.hrec` is not one object but a
folder of them: `seg-<offset>` objects, each holding the file's bytes from that offset (one
per signed checkpoint, cut from the local spool by `storage/spool.py`), and `manifest.json`,
written when the recording is closed, naming the segments, the size, the last chain value and
the last signature. Concatenated, the segments are byte for byte the file a local gateway
would have written, so the reader, the verifier and replay work on it unchanged through a
`Blob`: `read_at(offset, length)` becomes ranged GETs on the segments that hold those bytes.

boto3 is imported only when a store is first used: the command line starts without it.
Credentials come from environment variables named in the settings, never from the file, and
never appear in a message or a log line.
"""

from __future__ import annotations

import json
import os
import re
import threading
from bisect import bisect_right
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

SCHEME = "s3://"
SEGMENT_PREFIX = "seg-"
MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
DEFAULT_SPOOL_LIMIT = 1024**3
DEFAULT_ACCESS_KEY_ENV = "AWS_ACCESS_KEY_ID"
DEFAULT_SECRET_KEY_ENV = "AWS_SECRET_ACCESS_KEY"
# A ranged read fetches at least this much, so walking block heads is not one GET per block.
READ_AHEAD = 64 * 1024
CACHED_CHUNKS = 16
# The end of a recording (footer, trailer index, last signature) is read at every open: it is
# fetched at once, beside the header, in one GET: from the trailer on when the manifest says
# where it starts, else this much.
TAIL_BYTES = 64 * 1024
SECTION_KEYS = frozenset(
    {"url", "endpoint", "region", "access_key_env", "secret_key_env", "spool_dir", "spool_limit"}
)
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|kib|mb|mib|gb|gib|tb|tib)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    None: 1,
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
    "tb": 1000**4,
    "tib": 1024**4,
}
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class StoreConfigError(ValueError):
    """A `[recordings]` setting that cannot be used: `key` names it."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(problem)
        self.key = key
        self.problem = problem


class ObjectStoreUnavailable(OSError):
    """The object store did not answer, or refused: the message says why (never a secret)."""


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """`[recordings]` with a `url`: where recordings go and how to reach the store."""

    url: str
    endpoint: str | None = None
    region: str | None = None
    access_key_env: str = DEFAULT_ACCESS_KEY_ENV
    secret_key_env: str = DEFAULT_SECRET_KEY_ENV
    spool_dir: Path | None = None
    spool_limit: int = DEFAULT_SPOOL_LIMIT

    @property
    def bucket(self) -> str:
        return split_url(self.url)[0]

    @property
    def prefix(self) -> str:
        return split_url(self.url)[1]

    def spool_in(self, data_dir: Path) -> Path:
        return self.spool_dir if self.spool_dir is not None else data_dir / "spool"

    def location_of(self, session_id: str, started_at_us: int) -> str:
        """`s3://bucket/prefix/YYYY/MM/DD/<session id>.hrec`, by the session's UTC start day,
        like the local `recordings/` tree."""
        day = datetime.fromtimestamp(started_at_us / 1_000_000, tz=UTC)
        key = "/".join(p for p in (self.prefix, f"{day:%Y/%m/%d}", f"{session_id}.hrec") if p)
        return f"{SCHEME}{self.bucket}/{key}"

    def holds(self, location: str) -> bool:
        """Whether `location` is a recording under this store's bucket and prefix."""
        if not is_url(location):
            return False
        bucket, key = split_url(location)
        prefix = self.prefix
        return bucket == self.bucket and (not prefix or key.startswith(prefix + "/"))


def parse_size(value: object) -> int:
    """A byte count: an integer, or text like `512MiB`, `2GB`, `100 mb`."""
    if isinstance(value, bool):
        raise ValueError("not a size")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError("must be positive")
        return value
    if not isinstance(value, str) or not (found := _SIZE.match(value)):
        raise ValueError("must be a size like 512MiB or 2GB")
    unit = found.group(2).lower() if found.group(2) else None
    size = int(float(found.group(1)) * _SIZE_UNITS[unit])
    if size <= 0:
        raise ValueError("must be positive")
    return size


def parse_settings(section: object, config_dir: Path) -> StoreSettings | None:
    """The `[recordings]` table: None when there is none or it has no `url` (local disk, as
    before). Raises StoreConfigError naming the key."""
    if section is None:
        return None
    if not isinstance(section, dict):
        raise StoreConfigError("recordings", "must be a table")
    for key in section:
        if key in ("access_key", "secret_key", "access_key_id", "secret_access_key", "password"):
            raise StoreConfigError(
                f"recordings.{key}",
                "credentials never go in the file: name the environment variables that hold "
                "them with access_key_env and secret_key_env",
            )
        if key not in SECTION_KEYS:
            known = ", ".join(sorted(SECTION_KEYS))
            raise StoreConfigError(f"recordings.{key}", f"unknown key (known: {known})")
    url = section.get("url")
    if url is None:
        return None
    if not isinstance(url, str) or not is_url(url):
        raise StoreConfigError("recordings.url", 'must look like "s3://bucket/prefix"')
    bucket, _ = split_url(url)
    if not _BUCKET.match(bucket):
        raise StoreConfigError("recordings.url", f"{bucket!r} is not a valid bucket name")
    values: dict[str, Any] = {"url": url.rstrip("/")}
    for key in ("endpoint", "region", "access_key_env", "secret_key_env"):
        value = section.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not value:
            raise StoreConfigError(f"recordings.{key}", "must be a non-empty string")
        values[key] = value
    endpoint = values.get("endpoint")
    if endpoint is not None and not endpoint.startswith(("http://", "https://")):
        raise StoreConfigError("recordings.endpoint", 'must start with "http://" or "https://"')
    spool = section.get("spool_dir")
    if spool is not None:
        if not isinstance(spool, str) or not spool:
            raise StoreConfigError("recordings.spool_dir", "must be a non-empty string")
        path = Path(spool)
        values["spool_dir"] = path if path.is_absolute() else (config_dir / path).resolve()
    if "spool_limit" in section:
        try:
            values["spool_limit"] = parse_size(section["spool_limit"])
        except ValueError as exc:
            raise StoreConfigError("recordings.spool_limit", str(exc)) from None
    return StoreSettings(**values)


# -- locations ----------------------------------------------------------------------------------


def is_url(location: object) -> bool:
    return isinstance(location, str) and location.startswith(SCHEME)


def as_location(location: str | os.PathLike[str]) -> str:
    """A recording's location as text. `Path("s3://b/k")` has folded the `//` into `/`: this
    gives the URL back, so callers that wrapped a catalogue row's path in Path still work."""
    text = os.fspath(location)
    if text.startswith("s3:/") and not text.startswith(SCHEME):
        return SCHEME + text[len("s3:/") :]
    return text


def split_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/key` -> (`bucket`, `some/key`)."""
    rest = url[len(SCHEME) :]
    bucket, _, key = rest.partition("/")
    return bucket, key.strip("/")


def segment_key(key: str, offset: int) -> str:
    return f"{key}/{SEGMENT_PREFIX}{offset:016x}"


def manifest_key(key: str) -> str:
    return f"{key}/{MANIFEST_NAME}"


# -- settings a process knows -------------------------------------------------------------------

_KNOWN: list[StoreSettings] = []
_KNOWN_LOCK = threading.Lock()


def remember(settings: StoreSettings | None) -> None:
    """Let readers in this process reach `settings`' store by URL (a command that loaded the
    gateway's configuration calls this)."""
    if settings is None:
        return
    with _KNOWN_LOCK:
        if settings not in _KNOWN:
            _KNOWN.insert(0, settings)


def known_settings() -> list[StoreSettings]:
    """The stores this process knows, newest first (to hand to a child process)."""
    with _KNOWN_LOCK:
        return list(_KNOWN)


def settings_for(url: str) -> StoreSettings:
    """The settings of the configured store holding `url`; without one, the bucket with the
    endpoint and region of the environment (AWS_ENDPOINT_URL, AWS_REGION)."""
    known = known_settings()
    for settings in known:
        if settings.holds(url):
            return settings
    bucket, _ = split_url(url)
    for settings in known:
        if settings.bucket == bucket:
            return settings
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    return StoreSettings(url=f"{SCHEME}{bucket}", endpoint=endpoint, region=region)


# -- the store ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int


class ObjectStore:
    """One bucket of an S3-compatible store, through a shared botocore client. Every failure
    is an OSError: FileNotFoundError for a missing object, ObjectStoreUnavailable for the rest."""

    def __init__(self, settings: StoreSettings) -> None:
        self.settings = settings
        self.bucket = settings.bucket
        self._client: Any = None
        self._lock = threading.Lock()

    @classmethod
    def for_url(cls, url: str) -> ObjectStore:
        return store_for(settings_for(url))

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = _make_client(self.settings)
            return self._client

    def put(self, key: str, data: bytes) -> None:
        self._call("put_object", key, Body=data)

    def get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        """The object, or bytes `start` to `end` (exclusive) of it."""
        extra = {} if start is None else {"Range": f"bytes={start}-{(end or 0) - 1}"}
        answer = self._call("get_object", key, **extra)
        body = answer["Body"]
        try:
            data: bytes = body.read()
        except Exception as exc:  # a connection that broke half way through the body
            raise ObjectStoreUnavailable(f"{self.where(key)}: {_reason(exc)}") from None
        finally:
            body.close()
        return data

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        found: list[ObjectInfo] = []
        token: str | None = None
        while True:
            extra: dict[str, Any] = {"Prefix": prefix}
            if token:
                extra["ContinuationToken"] = token
            answer = self._call("list_objects_v2", None, **extra)
            for item in answer.get("Contents", []):
                found.append(ObjectInfo(str(item["Key"]), int(item["Size"])))
            if not answer.get("IsTruncated"):
                return found
            token = answer.get("NextContinuationToken")

    def delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            batch = [{"Key": key} for key in keys[start : start + 1000]]
            answer = self._call("delete_objects", None, Delete={"Objects": batch, "Quiet": True})
            errors = answer.get("Errors") or []
            if errors:  # an object lock, a policy: what was refused is still there
                first = errors[0]
                raise ObjectStoreUnavailable(
                    f"{self.where(str(first.get('Key')))}: {first.get('Code')} "
                    f"{first.get('Message', '')} ({len(errors)} object(s) not deleted)".strip()
                )

    def create_bucket(self) -> None:
        self._call("create_bucket", None)

    def where(self, key: str | None) -> str:
        return f"{SCHEME}{self.bucket}/{key}" if key else f"{SCHEME}{self.bucket}"

    def _call(self, operation: str, key: str | None, **extra: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        arguments: dict[str, Any] = {"Bucket": self.bucket, **extra}
        if key is not None:
            arguments["Key"] = key
        try:
            return getattr(self.client, operation)(**arguments)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("NoSuchKey", "404", "NotFound") or status == 404:
                raise FileNotFoundError(2, "no such object in the store", self.where(key)) from None
            message = error.get("Message") or code or "refused"
            raise ObjectStoreUnavailable(f"{self.where(key)}: {code} {message}".strip()) from None
        except BotoCoreError as exc:
            raise ObjectStoreUnavailable(f"{self.where(key)}: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:300]


_STORES: dict[StoreSettings, ObjectStore] = {}
_STORES_LOCK = threading.Lock()


def store_for(settings: StoreSettings) -> ObjectStore:
    """The process's one ObjectStore (and client) for these settings."""
    with _STORES_LOCK:
        store = _STORES.get(settings)
        if store is None:
            store = _STORES[settings] = ObjectStore(settings)
        return store


def _forget_after_fork() -> None:
    _STORES.clear()  # a client's connections are not shared with a forked child


os.register_at_fork(after_in_child=_forget_after_fork)


def _make_client(settings: StoreSettings) -> Any:
    import boto3
    from botocore.config import Config

    access = os.environ.get(settings.access_key_env)
    secret = os.environ.get(settings.secret_key_env)
    session = boto3.session.Session()
    config = Config(
        connect_timeout=3,
        read_timeout=15,
        retries={"max_attempts": 2, "mode": "standard"},
        max_pool_connections=16,
        s3={"addressing_style": "path"},
        user_agent_extra="hoop-tui",
    )
    return session.client(
        "s3",
        endpoint_url=settings.endpoint,
        region_name=settings.region or "us-east-1",
        aws_access_key_id=access or None,
        aws_secret_access_key=secret or None,
        config=config,
    )


# -- reading a recording ------------------------------------------------------------------------


class Blob(Protocol):
    """The bytes of a recording, wherever they are: what the reader and verifier read from."""

    name: str
    size: int

    def read_at(self, offset: int, length: int) -> bytes: ...

    def close(self) -> None: ...


class FileBlob:
    """A recording on the local disk."""

    def __init__(self, path: Path) -> None:
        self.name = str(path)
        self._fd = os.open(path, os.O_RDONLY)
        try:
            self.size = os.fstat(self._fd).st_size
        except OSError:
            os.close(self._fd)
            raise

    def read_at(self, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        return os.pread(self._fd, length, offset)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


@dataclass(frozen=True, slots=True)
class Segment:
    start: int
    size: int
    key: str


def read_manifest(store: ObjectStore, key: str) -> dict[str, Any] | None:
    try:
        raw = store.get(manifest_key(key))
    except FileNotFoundError:
        return None
    try:
        manifest = json.loads(raw)
    except ValueError:
        return None
    return manifest if isinstance(manifest, dict) else None


def list_segments(store: ObjectStore, key: str) -> list[Segment]:
    """The recording's segments in order, as far as they follow each other from offset 0."""
    found: list[Segment] = []
    for item in store.list_objects(f"{key}/{SEGMENT_PREFIX}"):
        try:
            start = int(item.key.rsplit("/", 1)[1][len(SEGMENT_PREFIX) :], 16)
        except ValueError:
            continue
        found.append(Segment(start, item.size, item.key))
    found.sort(key=lambda segment: segment.start)
    contiguous: list[Segment] = []
    end = 0
    for segment in found:
        if segment.start != end or segment.size <= 0:
            if segment.start < end:
                continue  # a duplicate of bytes already held
            break  # a gap: what follows it cannot be placed
        contiguous.append(segment)
        end = segment.start + segment.size
    return contiguous


class S3Blob:
    """A recording in the object store, read with ranged GETs through a small chunk cache.

    `fetched_bytes` and `requests` count what crossed the network, so tests and benchmarks
    can show that a seek reads the index and one frame, not the file."""

    def __init__(self, url: str, store: ObjectStore | None = None, *, tail: bool = True) -> None:
        self.name = url
        self.store = store or ObjectStore.for_url(url)
        _, self.key = split_url(url)
        self.fetched_bytes = 0
        self.requests = 0
        self.manifest = read_manifest(self.store, self.key)
        self.requests += 1
        segments: list[Segment] = []
        if self.manifest is not None:
            for start, size in self.manifest.get("segments", []):
                segments.append(Segment(int(start), int(size), segment_key(self.key, int(start))))
        else:
            segments = list_segments(self.store, self.key)
            self.requests += 1
        if not segments:
            raise FileNotFoundError(2, "no such recording in the object store", url)
        self._segments = segments
        self._starts = [segment.start for segment in segments]
        self.size = segments[-1].start + segments[-1].size
        self._chunks: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        # the tail, fetched while the reader asks for the header
        last = segments[-1]
        trailer = self.manifest.get("trailer_offset") if self.manifest is not None else None
        if isinstance(trailer, int) and 0 < trailer < self.size:
            self._tail_start = max(last.start, trailer - 64)  # and the chain before it
        else:
            self._tail_start = max(last.start, self.size - TAIL_BYTES)
        self._tail: bytes | BaseException | None = None
        self._tail_thread: threading.Thread | None = None
        if tail and self._tail_start > READ_AHEAD:
            self._tail_thread = threading.Thread(target=self._fetch_tail, daemon=True)
            self._tail_thread.start()

    def _fetch_tail(self) -> None:
        last = self._segments[-1]
        try:
            self._tail = self._fetch(last, self._tail_start - last.start, last.size)
        except BaseException as exc:  # handed to the reader that needs it
            self._tail = exc

    def read_at(self, offset: int, length: int) -> bytes:
        end = min(self.size, offset + max(0, length))
        if self._tail_thread is not None and offset >= self._tail_start:
            self._tail_thread.join()
            tail = self._tail
            if isinstance(tail, BaseException):
                raise tail
            assert tail is not None
            return tail[offset - self._tail_start : end - self._tail_start]
        out = bytearray()
        while offset < end:
            index = bisect_right(self._starts, offset) - 1
            segment = self._segments[index]
            inside = offset - segment.start
            wanted = min(end, segment.start + segment.size) - offset
            out += self._read_segment(index, segment, inside, wanted)
            offset += wanted
        return bytes(out)

    def _read_segment(self, index: int, segment: Segment, inside: int, wanted: int) -> bytes:
        chunk_start = inside - inside % READ_AHEAD
        if inside + wanted <= chunk_start + READ_AHEAD:  # within one cached chunk
            chunk = self._chunk(index, segment, chunk_start)
            return chunk[inside - chunk_start : inside - chunk_start + wanted]
        data = self._fetch(segment, inside, inside + wanted)  # large: straight through
        return data

    def _chunk(self, index: int, segment: Segment, chunk_start: int) -> bytes:
        cached = self._chunks.get((index, chunk_start))
        if cached is not None:
            self._chunks.move_to_end((index, chunk_start))
            return cached
        chunk = self._fetch(segment, chunk_start, min(segment.size, chunk_start + READ_AHEAD))
        self._chunks[(index, chunk_start)] = chunk
        if len(self._chunks) > CACHED_CHUNKS:
            self._chunks.popitem(last=False)
        return chunk

    def _fetch(self, segment: Segment, start: int, end: int) -> bytes:
        if start == 0 and end >= segment.size:
            data = self.store.get(segment.key)
        else:
            data = self.store.get(segment.key, start, end)
        self.requests += 1
        self.fetched_bytes += len(data)
        if len(data) != end - start:
            raise ObjectStoreUnavailable(
                f"{self.store.where(segment.key)}: expected {end - start} bytes, got {len(data)}"
            )
        return data

    def close(self) -> None:
        self._chunks.clear()


def open_blob(location: str | os.PathLike[str], *, tail: bool = True) -> Blob:
    """The bytes of a recording at a local path or an `s3://` URL. OSError when there are
    none (FileNotFoundError) or they cannot be read. `tail=False`: only the start will be
    read (a header), so the end of a stored recording is not fetched ahead."""
    text = as_location(location)
    if is_url(text):
        return S3Blob(text, tail=tail)
    return FileBlob(Path(text))


def list_recordings(settings: StoreSettings) -> list[str]:
    """The URL of every recording under the store's prefix (each has a segment at 0)."""
    store = store_for(settings)
    prefix = settings.prefix
    found = []
    for item in store.list_objects(f"{prefix}/" if prefix else ""):
        head, _, leaf = item.key.rpartition("/")
        if leaf == f"{SEGMENT_PREFIX}{0:016x}" and head.endswith(".hrec"):
            found.append(f"{SCHEME}{settings.bucket}/{head}")
    return sorted(found)


def delete_recording(url: str) -> int:
    """Remove every object of the recording at `url`; the bytes they held."""
    store = ObjectStore.for_url(url)
    _, key = split_url(url)
    objects = store.list_objects(f"{key}/")
    store.delete([item.key for item in objects])
    return sum(item.size for item in objects)
