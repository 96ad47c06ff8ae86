"""Issue 12, class 11: exec output masking is never switched off by a command's first word.
A file transfer is left byte-exact only when the command is exactly one server-side transfer
program AND its output starts with that protocol's greeting. Before the fix, any command whose
first word was `rsync`, `scp` or `git-upload-pack` printed cards and e-mails in clear."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.fixtures.gateway import GatewayHarness
from tests.proxy.ssh.gate_attacks import CARDS, exec_as_alice, start

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize(
    "command",
    [
        "rsync --version >/dev/null; cat {cards}",
        "/usr/bin/rsync -h >/dev/null; cat {cards}",
        "scp -h 2>/dev/null; cat {cards}",
        "git-upload-pack --help >/dev/null 2>&1; cat {cards}",
        "rsync --server --version >/dev/null 2>&1; cat {cards}",
        "scp -f /nonexistent 2>/dev/null </dev/null; cat {cards}",
        "printf '\\0'; cat {cards}",  # a forged scp greeting, from a command that is not scp
        "sftp-server -h >/dev/null 2>&1; cat {cards}",
    ],
)
async def test_a_transfer_program_named_first_does_not_unmask_what_follows(
    harness: GatewayHarness, tmp_path: Path, command: str
) -> None:
    await start(harness, masks=True)
    cards = tmp_path / "cards.txt"
    cards.write_text(CARDS)
    result = await exec_as_alice(harness, command.format(cards=cards))
    assert "1111" in result.out, result  # the file was printed...
    assert "4111 1111 1111 1111" not in result.out  # ...masked
    assert "5500 0000 0000 0004" not in result.out
    assert "alice@example.org" not in result.out


async def test_real_transfers_stay_byte_exact_with_masks_on(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    await start(harness, masks=True)
    cards = tmp_path / "cards.txt"
    cards.write_text(CARDS * 50)
    jump = harness.jump("alice")
    scp = await harness.run(
        "scp", "-O", "-J", jump, f"t1:{cards}", str(tmp_path / "scp-O.txt"), user="alice"
    )
    assert scp.status == 0, scp.err
    assert (tmp_path / "scp-O.txt").read_bytes() == cards.read_bytes()
    sftp = await harness.run(
        "scp", "-J", jump, f"t1:{cards}", str(tmp_path / "scp-s.txt"), user="alice"
    )
    assert sftp.status == 0, sftp.err
    assert (tmp_path / "scp-s.txt").read_bytes() == cards.read_bytes()
    if shutil.which("rsync") is not None:
        ssh = f"ssh -F {harness.client_config('alice')} -p {harness.port}"
        result = await harness.run_plain(
            "rsync", "-a", "-e", ssh, f"alice+t1@127.0.0.1:{cards}", str(tmp_path / "rsync.txt")
        )
        assert result.status == 0, result.err
        assert (tmp_path / "rsync.txt").read_bytes() == cards.read_bytes()
