"""asciicast v2 in and out, against recordings made by the real asciinema 2.4."""

from __future__ import annotations

import io
import json
import shutil
import subprocess

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from replay.asciicast import (
    CastError,
    export_cast,
    header_for_cast,
    read_cast,
    write_cast_recording,
)
from storage.reader import RecordingReader
from storage.verify import verify_recording

pytestmark = pytest.mark.skipif(not shutil.which("asciinema"), reason="asciinema not installed")


@pytest.fixture(scope="module")
def real_cast(tmp_path_factory):
    path = tmp_path_factory.mktemp("cast") / "real.cast"
    script = (
        "printf 'plain \\033[1;31mred bold\\033[0m caf\\303\\251\\n'; "
        "ls --color=always -la /usr; printf '\\342\\226\\210 done\\n'"
    )
    subprocess.run(
        ["asciinema", "rec", "-q", "-c", script, str(path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        check=True,
        timeout=60,
    )
    return path


def test_a_real_asciinema_recording_survives_import_and_export(tmp_path, real_cast):
    signer = Ed25519PrivateKey.generate()
    cast = read_cast(real_cast)
    header = header_for_cast(cast, signer, gateway_id="gw", source=real_cast)
    out = tmp_path / "imported.hrec"
    summary = write_cast_recording(cast, header, out, signer)
    assert summary.event_count == len(cast.events) + 1
    assert verify_recording(out, signer.public_key()).ok
    with RecordingReader.open(out) as reader:
        assert reader.header.cols == cast.header["width"]
        assert reader.header.term == cast.header["env"]["TERM"]
        exported = io.StringIO()
        export_cast(reader, exported)
    lines = exported.getvalue().splitlines()
    original = [json.loads(line) for line in real_cast.read_text().splitlines()[1:]]
    assert [json.loads(line) for line in lines[1:]] == original


def test_cast_problems_name_the_line(tmp_path):
    path = tmp_path / "c.cast"
    cases = {
        "": "empty file",
        '{"version": 2, "width": 0, "height": 24}\n': "'width' must be a positive integer",
        '{"version": 2, "width": 80, "height": 24}\n[1, "o"]\n': ":2: an event must be",
        '{"version": 2, "width": 80, "height": 24}\n[2, "o", "a"]\n[1, "o", "b"]\n': (
            ":3: event time goes backwards"
        ),
    }
    for content, message in cases.items():
        path.write_text(content)
        with pytest.raises(CastError, match=message):
            read_cast(path)
    path.write_bytes(b'{"version": 2, "width": 80, "height": 24}\n[1, "o", "\xff"]\n')
    with pytest.raises(CastError, match="not UTF-8"):
        read_cast(path)
