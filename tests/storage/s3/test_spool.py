"""Recordings shipped from the spool to a real SeaweedFS, and read back from it with ranged
GETs: the writer, the spool and the reader without a gateway around them."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import pytest

from storage import spool as spool_module
from storage import writer as writer_module
from storage.objectstore import (
    MANIFEST_NAME,
    S3Blob,
    StoreSettings,
    parse_settings,
    remember,
    split_url,
)
from storage.reader import RecordingReader
from storage.schema import EventType
from storage.signing import key_id
from storage.spool import Spool, SpoolFull, last_proof, spool_status
from storage.verify import verify_recording
from storage.writer import RecordingWriter
from tests.fixtures.seaweed import SECRET_ENV, SeaweedFS
from tests.storage.helpers import make_header
from tests.storage.s3.conftest import spooled


def settings_of(seaweed: SeaweedFS, tmp_path: Path, **extra: object) -> StoreSettings:
    table = seaweed.settings_table(spool_dir=str(tmp_path / "spool"), **extra)
    settings = parse_settings(table, tmp_path)
    assert settings is not None
    remember(settings)  # as loading a gateway.toml does: readers find the store by URL
    return settings


def start(spool: Spool, settings: StoreSettings, signer, **writer_options) -> RecordingWriter:
    header = make_header(session_id=uuid.uuid4().hex, started_at_us=time.time_ns() // 1000)
    header.signing_key_id = key_id(signer.public_key())
    url = settings.location_of(header.session_id, header.started_at_us)
    path = spool.begin(header.session_id, url)
    session_id = header.session_id
    return RecordingWriter(
        path,
        header,
        signer,
        fsync=False,
        on_segment=lambda end, final: spool.segment_ready(session_id, end, final),
        **writer_options,
    )


def url_of(settings: StoreSettings, writer: RecordingWriter) -> str:
    return settings.location_of(writer.header.session_id, writer.header.started_at_us)


def test_each_checkpoint_is_an_object_and_the_close_a_manifest(
    store_running, tmp_path, signer, monkeypatch
):
    monkeypatch.setattr(writer_module, "CHECKPOINT_INTERVAL_S", 0.2)
    monkeypatch.setattr(writer_module, "FRAME_INTERVAL_S", 0.1)
    monkeypatch.setattr(spool_module, "SEGMENT_INTERVAL_S", 0.0)
    settings = settings_of(store_running, tmp_path)
    spool = Spool(settings, tmp_path)
    writer = start(spool, settings, signer)
    url = url_of(settings, writer)
    sent = []
    for n in range(60):
        line = f"line {n}\r\n".encode()
        writer.record(EventType.OUTPUT, 0, line)
        sent.append(line)
        time.sleep(0.03)
    writer.close("client closed")
    assert spool.drain(30)
    assert spooled(spool.directory) == []  # shipped, then the spool's copy is gone
    _, key = split_url(url)
    keys = store_running.object_keys(key + "/")
    segments = [k for k in keys if "/seg-" in k]
    assert len(segments) >= 4, keys  # the header, several checkpoints, the close
    assert f"{key}/{MANIFEST_NAME}" in keys
    manifest = json.loads(S3Blob(url).store.get(f"{key}/{MANIFEST_NAME}"))
    assert manifest["complete"] is True
    assert len(manifest["signature"]) == 128 and len(manifest["chain"]) == 64

    with RecordingReader.open(url) as reader:
        assert reader.complete
        assert b"".join(e["data"] for e in reader.events() if e.name == "output") == b"".join(sent)
    report = verify_recording(url, signer.public_key())
    assert report.ok, report.summary()
    assert str(report.path) == url


def test_a_seek_reads_the_index_and_one_frame_not_the_file(store_running, tmp_path, signer):
    """100 s of bulk output, 20 MB; the screen at 60 s needs a few hundred KB from the store."""
    settings = settings_of(store_running, tmp_path)
    spool = Spool(settings, tmp_path)
    writer = start(spool, settings, signer)
    url = url_of(settings, writer)
    for second in range(100):
        data = b"%d|" % second + os.urandom(200_000)  # random: it does not compress
        writer.record_at(second * 1_000_000, EventType.OUTPUT, 0, data)
    writer.close("client closed")
    assert spool.drain(60)
    with RecordingReader.open(url) as reader:
        assert reader.size > 19_000_000
        frame = reader.read_frame(reader.frame_index_at(60_000_000))
        assert any(e["data"].startswith(b"60|") for e in frame if e.name == "output")
        blob = reader.blob
        assert isinstance(blob, S3Blob)
        assert blob.fetched_bytes < reader.size / 20, (blob.fetched_bytes, reader.size)
        assert blob.requests < 10


def test_a_stopped_store_keeps_everything_in_the_spool_until_it_returns(
    seaweed, tmp_path, signer, monkeypatch
):
    monkeypatch.setattr(writer_module, "CHECKPOINT_INTERVAL_S", 0.2)
    if seaweed.process is None:
        seaweed.start()
    settings = settings_of(seaweed, tmp_path, spool_limit="20KiB")
    spool = Spool(settings, tmp_path)
    seaweed.stop()
    try:
        writer = start(spool, settings, signer)
        for n in range(30):
            writer.record(EventType.OUTPUT, 0, os.urandom(1000) + b"%d" % n)
            time.sleep(0.02)
        writer.close("client closed")  # the session ends as usual: the store is not in its way
        assert not spool.drain(3)
        assert len(spooled(spool.directory)) == 1
        status = spool_status(settings, tmp_path)
        assert status.failing_since is not None and status.last_error
        assert status.pending_bytes > 20 * 1024 and status.over_limit
        assert any("FAILING" in line for line in status.lines())
        with pytest.raises(SpoolFull, match=r"more than its limit of 20\.0 KiB"):
            spool.check_room()
    finally:
        seaweed.start()
    assert spool.drain(60)
    assert spooled(spool.directory) == []
    spool.check_room()  # room again
    report = verify_recording(url_of(settings, writer), signer.public_key())
    assert report.ok, report.summary()
    assert spool_status(settings, tmp_path).failing_since is None


def test_what_a_crash_left_in_the_spool_is_uploaded_by_the_next_start(
    store_running, tmp_path, signer, monkeypatch
):
    """A writer that never closed (its process died): a new Spool on the same directory ships
    the whole file, the tail after the last checkpoint too, with an incomplete manifest."""
    monkeypatch.setattr(writer_module, "CHECKPOINT_INTERVAL_S", 0.3)
    settings = settings_of(store_running, tmp_path)
    first = Spool(settings, tmp_path)
    writer = start(first, settings, signer)
    url = url_of(settings, writer)
    for n in range(50):
        writer.record(EventType.OUTPUT, 0, b"%d\r\n" % n)
        time.sleep(0.02)
    time.sleep(1.0)  # the last frame is written, after the last checkpoint
    first.stop(timeout=5)  # the first run's shipper is gone; the writer never closed
    (path,) = spooled(first.directory)
    assert not last_proof(path).complete
    second = Spool(settings, tmp_path)
    assert second.recover() == [writer.header.session_id]
    assert second.drain(30)
    with RecordingReader.open(url) as reader:
        outputs = [e["data"] for e in reader.events() if e.name == "output"]
        assert outputs[-1] == b"49\r\n"
    report = verify_recording(url, signer.public_key())
    assert not report.ok and report.signed_until_us is not None
    assert "incomplete recording" in (report.problem or "")
    manifest = S3Blob(url).manifest
    assert manifest is not None and manifest["complete"] is False
    assert "recovered" in manifest["end"]


def test_a_refused_credential_is_reported_without_repeating_it(
    store_running, tmp_path, signer, caplog
):
    """Credentials come from the environment; a wrong one fails the upload (the spool keeps
    the recording) and the error the operator sees names the problem, never the secret."""
    wrong = "not-the-secret-8d1f0c"
    os.environ[SECRET_ENV] = wrong
    try:
        settings = settings_of(store_running, tmp_path)
        spool = Spool(settings, tmp_path)
        writer = start(spool, settings, signer)
        writer.record(EventType.OUTPUT, 0, b"x")
        writer.close("client closed")
        assert not spool.drain(2)
    finally:
        os.environ[SECRET_ENV] = store_running.env()[SECRET_ENV]
    status = spool.status()
    assert status.last_error and "SignatureDoesNotMatch" in status.last_error
    assert wrong not in status.last_error and wrong not in caplog.text
    assert wrong not in (spool.directory / "status.json").read_text()
    spool.stop(timeout=0)


def test_a_spool_entry_whose_file_is_gone_does_not_block_the_others(
    store_running, tmp_path, signer
):
    """A sidecar without its file (a writer that could not even create it): logged and
    dropped; the store is not reported failing and the next recording ships."""
    settings = settings_of(store_running, tmp_path)
    spool = Spool(settings, tmp_path)
    spool.begin("f" * 32, settings.location_of("f" * 32, time.time_ns() // 1000))
    spool.segment_ready("f" * 32, None, True)
    writer = start(spool, settings, signer)
    writer.record(EventType.OUTPUT, 0, b"next")
    writer.close("client closed")
    assert spool.drain(30)
    assert spool.status().failing_since is None
    assert [p.name for p in spool.directory.glob("*.json")] == ["status.json"]
    assert verify_recording(url_of(settings, writer), signer.public_key()).ok


def test_checkpoints_between_two_uploads_share_an_object_that_ends_at_a_signature(
    store_running, tmp_path, signer, monkeypatch
):
    """The writer signs often; the store gets at most one object per SEGMENT_INTERVAL_S per
    recording, and each ends right after a checkpoint block (a signature over all before)."""
    monkeypatch.setattr(writer_module, "CHECKPOINT_INTERVAL_S", 0.1)
    monkeypatch.setattr(writer_module, "FRAME_INTERVAL_S", 0.05)
    monkeypatch.setattr(spool_module, "SEGMENT_INTERVAL_S", 1.0)
    settings = settings_of(store_running, tmp_path)
    spool = Spool(settings, tmp_path)
    writer = start(spool, settings, signer)
    url = url_of(settings, writer)
    for n in range(100):
        writer.record(EventType.OUTPUT, 0, b"%d\r\n" % n)
        time.sleep(0.025)
    writer.close("client closed")
    assert spool.drain(30)
    blob = S3Blob(url)
    assert blob.manifest is not None
    segments = blob.manifest["segments"]
    with RecordingReader.open(url) as reader:
        checkpoints = 0
        offset = reader.header_end
        while offset < reader.size - 16:
            head = reader.blob.read_at(offset, 5)
            if head[:1] == b"C":
                checkpoints += 1
            offset += 5 + int.from_bytes(head[1:5], "big") + 32
    assert 3 <= len(segments) <= 6, segments  # header, about one a second, the close
    assert checkpoints >= 2 * len(segments), (checkpoints, segments)
    checkpoint_block = 5 + 16 + 64 + 32
    for offset, size in segments[1:-1]:
        assert blob.read_at(offset + size - checkpoint_block, 1) == b"C"
