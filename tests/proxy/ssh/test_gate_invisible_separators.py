"""Issue 12, class 12, attacked: an invisible character next to a separator inside a secret.
The fix for class 12 looked through NULs and zero-width characters only when they sat between
two characters a secret is made of, so `4111<NUL> 1111<NUL> ...` (a NUL before each space) and
`password: <NUL>hunter2` came through in clear although a terminal shows the whole card and
the whole password. Fails on the code before (6 of 6)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.gateway import GatewayHarness, recordings
from tests.proxy.ssh.gate_attacks import CARDS, exec_as_alice, start
from tests.proxy.ssh.test_gate_invisible_masking import assert_masked, shown

pytestmark = pytest.mark.timeout(120)

SECRETS = CARDS + 'password: hunter2secret\n{"password": "hunter2secret"}\n'


@pytest.mark.parametrize(
    "insert",
    [
        r"sed 's/ /\x00 /g'",  # before each space
        r"sed 's/ / \x00/g'",  # after it
        r"sed 's/ /\x01 \x7f/g'",  # both sides
        r"sed 's/ /\xe2\x80\x8b /g'",  # a zero-width space before it
        r"sed 's/ / \xc2\xad/g'",  # a soft hyphen after it
        r"sed 's/\x22/\x22\x00/g'",  # after each double quote
    ],
)
async def test_an_invisible_character_beside_a_separator_does_not_unmask_a_secret(
    harness: GatewayHarness, tmp_path: Path, insert: str
) -> None:
    await start(harness, masks=True)
    secrets = tmp_path / "secrets.txt"
    secrets.write_text(SECRETS)
    result = await exec_as_alice(harness, f"{insert} {secrets}")
    assert result.status == 0, result
    for text in (shown(result.stdout), shown((await recordings(harness))[0].output())):
        assert_masked(text)
        assert "password" in text, text  # the line came through...
        assert "hunter2secret" not in text  # ...with its value masked
