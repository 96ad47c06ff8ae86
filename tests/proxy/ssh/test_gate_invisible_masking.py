"""Issue 12, class 12: control and zero-width characters inside a secret do not hide it. A
terminal draws a NUL as nothing, so `4111<NUL>1111<NUL>...` shows the whole card; masking
must see the text as shown. Before the fix `sed 's/\\(....\\)/\\1\\x00/g' cards.txt` printed
every card and e-mail in clear."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.gateway import GatewayHarness, recordings
from tests.proxy.ssh.gate_attacks import CARDS, Terminal, exec_as_alice, start

pytestmark = pytest.mark.timeout(120)

INVISIBLE = "\x00\x01\x7f\u200b\u2060\ufeff\u00ad"


def shown(data: bytes) -> str:
    """What a terminal shows: the invisible characters dropped."""
    text = data.decode("utf-8", "replace")
    return "".join(char for char in text if char not in INVISIBLE)


def assert_masked(text: str) -> None:
    assert "1111" in text or "0004" in text, text  # the lines came through...
    assert "4111 1111 1111 1111" not in text  # ...without a whole card
    assert "5500 0000 0000 0004" not in text
    assert "alice@example.org" not in text


@pytest.mark.parametrize(
    "insert",
    [
        r"sed 's/\(....\)/\1\x00/g'",
        r"sed 's/\(..\)/\1\x00\x00/g'",
        r"sed 's/\(...\)/\1\x01/g'",
        r"sed 's/\(....\)/\1\x7f/g'",
        r"sed 's/\(.\)/\1\xe2\x80\x8b/g'",  # a zero-width space after every character
        r"sed 's/\(....\)/\1\xe2\x81\xa0/g'",  # word joiner
        r"sed 's/\(....\)/\1\xc2\xad/g'",  # soft hyphen
    ],
)
async def test_invisible_characters_between_digits_do_not_unmask_a_card(
    harness: GatewayHarness, tmp_path: Path, insert: str
) -> None:
    await start(harness, masks=True)
    cards = tmp_path / "cards.txt"
    cards.write_text(CARDS)
    result = await exec_as_alice(harness, f"{insert} {cards}")
    assert result.status == 0, result
    assert_masked(shown(result.stdout))
    (recorded,) = await recordings(harness)
    assert_masked(shown(recorded.output()))  # nor does the recording hold them


async def test_invisible_characters_in_a_terminal_are_masked_too(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    await start(harness, masks=True)
    (tmp_path / "cards.txt").write_text(CARDS)
    terminal = await Terminal.bash(harness, tmp_path)
    try:
        screen = await terminal.line(r"sed 's/\(....\)/\1\x00/g' cards.txt")
    finally:
        await terminal.close()
    assert_masked(shown(screen).split("cards.txt", 1)[1])
