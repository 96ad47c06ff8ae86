"""The stream masker: split secrets, held tails, escape sequences, UTF-8, long PEM blocks, and
`cat` of a file of secrets through a real pseudo-terminal."""

from __future__ import annotations

import itertools
import os
import pty
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import storage.masking
from storage.mask_stream import MaskStream
from storage.masking import ESCAPE, MaskPolicy
from tests.fixtures.waiting import readable


@pytest.fixture(scope="module", autouse=True, params=["prefilter always", "prefilter never"])
def prefilter_mode(request):
    """Every test here runs twice: with the compiled prefilter on every text the stream scans
    (however short), and never (each detector's own passes)."""
    saved = storage.masking.PREFILTER_MIN
    storage.masking.PREFILTER_MIN = 0 if request.param == "prefilter always" else sys.maxsize
    yield request.param
    storage.masking.PREFILTER_MIN = saved


SECRET = b"gateway-secret"
ALL_DETECTORS = [
    {"name": "cards", "detector": "credit_card"},
    {"name": "mail", "detector": "email"},
    {"name": "iban", "detector": "iban"},
    {"name": "ssn", "detector": "us_ssn"},
    {"name": "jwt", "detector": "jwt"},
    {"name": "aws", "detector": "aws_access_key"},
    {"name": "keys", "detector": "pem_private_key"},
    {"name": "assign", "detector": "password_assignment"},
]


def make_masker(rules=ALL_DETECTORS):
    return MaskPolicy.from_config(rules, "gw.toml", SECRET).for_caller(["dev"], "web1")


MASKER = make_masker()
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
    "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
)
PEM = (
    "-----BEGIN PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VwBCIEIBnS8Wj0pgqj6ZQ0G5Ydbn1d3M1hkV1QGvZLw2Xa4GbY\n"
    "-----END PRIVATE KEY-----\n"
)
SECRETS = [
    "4111 1111 1111 1111",
    "5555555555554444",
    "378282246310005",
    "alice@example.com",
    "DE89370400440532013000",
    "GB82 WEST 1234 5698 7654 32",
    "123-45-6789",
    JWT,
    "AKIAIOSFODNN7EXAMPLE",
    "hunter2",
]
FILE = (
    "cards: 4111 1111 1111 1111, 5555555555554444 and amex 378282246310005\n"
    "not a card: 4111111111111112, order 12345678901234567890123\n"
    "\x1b[1;32mcontact\x1b[0m alice@example.com — café ☕ 漢字\n"
    "iban DE89370400440532013000 / GB82 WEST 1234 5698 7654 32, bad GB83WEST12345698765432\n"
    "ssn 123-45-6789 aws AKIAIOSFODNN7EXAMPLE\n"
    f"Authorization: Bearer {JWT}\n"
    "DB_PASSWORD=hunter2\n" + PEM + "\x1b]0;title\x07done\n"
).encode()


def run(stream: MaskStream, pieces: list[bytes]) -> tuple[bytes, list]:
    out, acts = [], []
    for piece in pieces:
        data, found = stream.feed(piece)
        out.append(data)
        acts += found
    data, found = stream.flush(final=True)
    out.append(data)
    acts += found
    return b"".join(out), acts


def one_shot(data: bytes, masker=MASKER) -> bytes:
    return masker.mask_text(data.decode("utf-8", "surrogateescape"))[0].encode(
        "utf-8", "surrogateescape"
    )


EXPECTED = one_shot(FILE)


def test_the_file_masks_every_secret():
    text = EXPECTED.decode()
    for secret in SECRETS:
        assert secret not in text
    assert "4111111111111112" in text and "GB83WEST12345698765432" in text
    assert "\x1b[1;32mcontact\x1b[0m" in text and "café ☕ 漢字" in text
    assert "-----BEGIN PRIVATE KEY-----\n" + "*" * 64 + "\n-----END PRIVATE KEY-----" in text


def test_every_split_at_every_byte_boundary_gives_the_same_output():
    for cut in range(len(FILE) + 1):
        out, _ = run(MaskStream(MASKER), [FILE[:cut], FILE[cut:]])
        assert out == EXPECTED, cut


def test_byte_at_a_time_and_three_way_splits():
    out, acts = run(MaskStream(MASKER), [FILE[i : i + 1] for i in range(len(FILE))])
    assert out == EXPECTED
    assert sorted(a.rule for a in acts) == sorted(
        a.rule for a in MASKER.mask_text(FILE.decode())[1]
    )
    for first in range(0, len(FILE), 7):
        for second in range(first, len(FILE), 13):
            out, _ = run(MaskStream(MASKER), [FILE[:first], FILE[first:second], FILE[second:]])
            assert out == EXPECTED, (first, second)


def test_acts_point_at_the_masks_in_the_forwarded_stream():
    out, acts = run(
        MaskStream(MASKER, position=1000), [FILE[i : i + 5] for i in range(0, len(FILE), 5)]
    )
    assert len(acts) == 11
    for act in acts:
        start = act.position - 1000
        if act.rule == "keys":
            assert out[start : start + act.length].strip(b"*\r\n") == b""
        else:
            assert out[start : start + act.length] == b"*" * act.length, act
    assert all("4111" not in a.token for a in acts)


def test_only_a_possible_secret_is_held():
    stream = MaskStream(MASKER)
    data, _ = stream.feed(b"total 0\r\n\x1b[01;34mdir\x1b[0m\r\n$ ")
    assert data == b"total 0\r\n\x1b[01;34mdir\x1b[0m\r\n$ " and stream.held == 0
    data, _ = stream.feed(b"card 4111 1111")
    assert data == b"card " and stream.held == len("4111 1111")
    data, acts = stream.feed(b" 1111 1111\r\n")
    assert data == b"*" * 19 + b"\r\n"
    assert acts[0].position == len(b"total 0\r\n\x1b[01;34mdir\x1b[0m\r\n$ card ")
    data, _ = stream.feed(b"\x1b[3")  # an unfinished escape sequence is held
    assert data == b"" and stream.held == 3
    assert stream.flush() == (b"\x1b[3", [])


def test_flush_releases_the_tail_and_a_late_rest_is_not_joined():
    stream = MaskStream(MASKER)
    assert stream.feed(b"4111 1111")[0] == b""
    assert stream.flush()[0] == b"4111 1111"
    assert stream.feed(b" 1111 1111\n")[0] == b" 1111 1111\n"


def test_utf8_split_inside_a_character_and_invalid_bytes_pass_unchanged():
    data = "é漢☕".encode() + b"\xff\xfe ok 4111111111111111 \xc3"
    for cut in range(len(data) + 1):
        out, _ = run(MaskStream(MASKER), [data[:cut], data[cut:]])
        assert out == "é漢☕".encode() + b"\xff\xfe ok " + b"*" * 16 + b" \xc3"


def test_a_pem_block_longer_than_the_lookbehind_is_masked_as_it_streams():
    body = "".join(
        f"{'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'}\n"
        for _ in range(400)
    )
    data = (
        "key:\n-----BEGIN RSA PRIVATE KEY-----\n" + body + "-----END RSA PRIVATE KEY-----\nok\n"
    ).encode()
    stream = MaskStream(MASKER)
    forwarded, acts = [], []
    for start in range(0, len(data), 1000):
        out, found = stream.feed(data[start : start + 1000])
        forwarded.append(out)
        acts += found
        assert stream.held < 100  # never holds the key
    out, found = stream.flush(final=True)
    forwarded.append(out)
    acts += found
    whole = b"".join(forwarded)
    assert whole == one_shot(data)
    assert b"ABCDEF" not in whole and whole.endswith(b"-----END RSA PRIVATE KEY-----\nok\n")
    assert len(acts) == 1 and acts[0].length == len(body) + 1
    assert acts[0].token == MASKER.mask_text(data.decode())[1][0].token


def test_an_unterminated_pem_block_is_masked_until_the_end():
    data = b"-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIA\n"
    out, acts = run(MaskStream(MASKER), [data[:40], data[40:]])
    assert out == b"-----BEGIN EC PRIVATE KEY-----\n**********\n" and len(acts) == 1


def test_no_text_rules_is_a_pass_through():
    stream = MaskStream(make_masker([{"name": "pw", "column": "password"}]))
    assert stream.feed(b"4111111111111111") == (b"4111111111111111", [])


# -- properties ------------------------------------------------------------------------------

FULL_ONLY = make_masker([r for r in ALL_DETECTORS if r["detector"] != "pem_private_key"])
NOISE = st.sampled_from(
    [
        "a",
        "b",
        " ",
        "\r\n",
        "1",
        "2",
        "-",
        "@",
        ".",
        "=",
        ":",
        "é",
        "漢",
        "☕",
        "A",
        "K",
        "e",
        "\x1b[31m",
        "\x1b[0m",
        "\x1b]0;t\x07",
        "\x1b(B",
        "password",
        "\t",
        "eyJ",
        "\x00",
    ]
)
DETECTABLE = [*SECRETS[:-1], "password=hunter2"]
PIECES = st.lists(st.one_of(NOISE, NOISE, st.sampled_from(DETECTABLE)), max_size=30)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


COLOURED_PEM = PEM.replace("MC4C", "MC\x1b[31m4C\x1b[0m")
WITH_KEYS = st.lists(
    st.one_of(NOISE, NOISE, st.sampled_from([*DETECTABLE, PEM, COLOURED_PEM, PEM[:40]])),
    max_size=30,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(WITH_KEYS, st.lists(st.integers(min_value=0, max_value=10_000), max_size=8))
def test_chunking_never_changes_the_result(pieces, cuts):
    text = "".join(pieces)
    data = text.encode()
    out, _ = run(MaskStream(MASKER), chunked(data, cuts))
    assert out == one_shot(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(PIECES, st.lists(st.integers(min_value=0, max_value=10_000), max_size=8))
def test_no_whole_secret_passes_and_bytes_outside_matches_are_unchanged(pieces, cuts):
    text = " ".join(pieces)  # secrets separated from their neighbours
    data = text.encode()
    out, _ = run(MaskStream(FULL_ONLY), chunked(data, cuts))
    result = out.decode()
    for piece in pieces:
        if piece in DETECTABLE:
            assert piece not in result
    # full style keeps lengths: every changed character became '*' inside a hit
    hits = FULL_ONLY.find(text)
    inside = set()
    for hit in hits:
        inside.update(range(hit.vstart, hit.vend))
    assert len(result) == len(text)
    for index, (before, after) in enumerate(zip(text, result, strict=True)):
        if before != after:
            assert after == "*" and index in inside
    assert ESCAPE.findall(result) == ESCAPE.findall(text)


# -- a real terminal -------------------------------------------------------------------------


@pytest.mark.programs
def test_cat_of_a_file_of_secrets_through_a_real_pty(tmp_path):
    path = tmp_path / "secrets.txt"
    path.write_bytes(FILE * 20)
    pid, fd = pty.fork()
    if pid == 0:  # the child: cat the file on the terminal
        os.execvp("cat", ["cat", str(path)])
    stream = MaskStream(MASKER)
    raw, forwarded = [], []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if not readable(fd, 0.5):
            continue
        try:
            chunk = os.read(fd, 1024)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        raw.append(chunk)
        forwarded.append(stream.feed(chunk)[0])
    forwarded.append(stream.flush(final=True)[0])
    os.waitpid(pid, 0)
    os.close(fd)
    seen = b"".join(raw)
    assert seen == (FILE * 20).replace(b"\n", b"\r\n")  # the terminal's own newline mapping
    assert len(raw) > 1
    assert b"".join(forwarded) == one_shot(seen)
    assert b"".join(forwarded) == EXPECTED.replace(b"\n", b"\r\n") * 20


def test_a_coloured_pem_body_cut_anywhere_keeps_its_escape_sequences():
    data = ("x " + COLOURED_PEM + "y").encode()
    expected = one_shot(data)
    assert b"\n**\x1b[31m**\x1b[0m****" in expected
    for cut in range(len(data) + 1):
        assert run(MaskStream(MASKER), [data[:cut], data[cut:]])[0] == expected, cut


# -- fast paths ------------------------------------------------------------------------------

DECOYS = (
    f"é xeyJ{JWT[3:]} eyJnot.a.token {JWT}\r\nAKIA AAKIAIOSFODNN7EXAMPLE ASIAIOSFODNN7EXAMPLE "
    "token: s3cr3t, a@b.example.org a@b.example.org\n"
).encode()


def test_literal_first_detectors_split_at_every_byte_boundary():
    """JWT and AWS keys are looked for from their literal start (`eyJ`, `AKIA`...), tokens
    come from a per-masker cache: a secret cut anywhere is still masked, decoys and every byte
    outside a match are unchanged, and the acts point at the masks in non-ASCII output."""
    expected = one_shot(DECOYS)
    text = expected.decode()
    assert text.count(JWT) == 1 and f"xeyJ{JWT[3:]} eyJnot.a.token {'*' * len(JWT)}" in text
    assert "ASIAIOSFODNN7EXAMPLE" not in text and "s3cr3t" not in text
    assert "AKIA AAKIAIOSFODNN7EXAMPLE " in text
    assert "a@b.example.org" not in text
    for cut in range(len(DECOYS) + 1):
        out, acts = run(MaskStream(MASKER, position=7), [DECOYS[:cut], DECOYS[cut:]])
        assert out == expected, cut
        assert len(acts) == 5
        for act in acts:
            start = act.position - 7
            assert out[start : start + act.length] == b"*" * act.length, (cut, act)
        assert acts[-1].token == acts[-2].token  # the same address, the same (cached) token


def test_the_prefilter_and_the_per_detector_passes_give_the_same_stream():
    """A long stream (the prefilter's case) cut into uneven pieces: the same bytes and acts
    with the compiled prefilter as with each detector's own passes, whatever the mode."""
    data = (FILE + DECOYS) * 15 + "é 4111 1111 1111 1111 pa\u017f\u017fword=x\n".encode()
    pieces = chunked(data, [*range(0, len(data), 997), 5, 6, 4000, 4001])
    fast = make_masker()
    assert fast._prefilter is not None
    slow = storage.masking.Masker(fast.rules, fast.secret, prefilter=False)
    saved = storage.masking.PREFILTER_MIN
    try:
        storage.masking.PREFILTER_MIN = 0
        got = run(MaskStream(fast), pieces)
    finally:
        storage.masking.PREFILTER_MIN = saved
    assert got == run(MaskStream(slow), pieces)
    assert got[0] == one_shot(data, slow)
    assert "pa\u017f\u017fword=*\n".encode() in got[0]  # the value is masked
