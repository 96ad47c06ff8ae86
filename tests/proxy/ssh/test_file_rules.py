"""File rules (`files` + `operations` in [[rules]]) judge file operations however they are
asked for (issue 12, class 10): SFTP requests from real `sftp`, real `scp` in its default SFTP
mode and in the legacy protocol (`-O`); shell redirects are in test_file_rules_redirects.
A denied request never reaches the target and the client is told `Permission denied` with the
rule's message; a held one waits until an approver decides."""

from __future__ import annotations

import asyncio
import getpass
import time
from pathlib import Path

import pytest

from proxy.holds.broker import Person
from tests.fixtures.gateway import GatewayHarness, Result, recordings

pytestmark = pytest.mark.timeout(120)

BOB = Person("bob", frozenset({"oncall"}))
MESSAGE = "canaries stay where they are"


async def start(harness: GatewayHarness, tmp_path: Path) -> tuple[Path, Path]:
    """alice (dev) on t1; `*canary*` may not be read, written or deleted; reading anything in
    `held/` needs bob's approval. Returns the canary file and the held directory."""
    harness.add_user("alice", groups=("dev",))
    harness.add_user("bob", groups=("oncall",))
    harness.add_target("t1")
    held = tmp_path / "held"
    held.mkdir()
    (held / "report.txt").write_text("quarterly\n")
    harness.add_rule(
        "no-canary",
        files=["*canary*"],
        operations=["read", "write", "delete"],
        action="deny",
        message=MESSAGE,
    )
    harness.add_rule(
        "canary-names",
        files=["*canary*"],
        operations=["rename", "symlink"],
        action="deny",
        message=MESSAGE,
    )
    harness.add_rule(
        "held-reads",
        files=[f"{held}/*"],
        operations=["read"],
        action="review",
        approvers=["oncall"],
        timeout="1m",
    )
    harness.operators[getpass.getuser()] = "bob"
    await harness.start_runtime()
    canary = tmp_path / "x-canary"
    canary.write_text("tweet\n")
    return canary, held


async def sftp(harness: GatewayHarness, script: str) -> Result:
    return await harness.run(
        "sftp",
        "-b",
        "-",
        "-P",
        str(harness.port),
        "alice+t1@127.0.0.1",
        user="alice",
        stdin=script.encode(),
    )


async def scp(harness: GatewayHarness, *args: str) -> Result:
    return await harness.run("scp", "-P", str(harness.port), *args, user="alice")


def remote(path: Path | str) -> str:
    return f"alice+t1@127.0.0.1:{path}"


async def test_sftp_rm_of_a_denied_path_is_refused_with_the_rules_message(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    canary, _ = await start(harness, tmp_path)
    result = await sftp(harness, f"rm {canary}\n")
    assert result.status != 0
    assert "Permission denied" in result.err
    assert MESSAGE in result.err
    assert canary.read_text() == "tweet\n"
    (recorded,) = await recordings(harness)
    assert ("deny", "no-canary") in [(v["action"], v["rule"]) for v in recorded.of("verdict")]


@pytest.mark.parametrize(
    "spelling",
    ["{canary}", "{dir}//x-canary", "{dir}/./x-canary", "{dir}/../{name}/x-canary"],
)
async def test_sftp_get_of_a_denied_path_downloads_nothing(
    harness: GatewayHarness, tmp_path: Path, spelling: str
) -> None:
    canary, _ = await start(harness, tmp_path)
    path = spelling.format(canary=canary, dir=tmp_path, name=tmp_path.name)
    local = tmp_path / "local-copy"
    result = await sftp(harness, f"get {path} {local}\n")
    assert result.status != 0 and "Permission denied" in result.err
    assert not local.exists()


async def test_sftp_put_onto_a_denied_path_writes_nothing(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    _, _ = await start(harness, tmp_path)
    source = tmp_path / "source.txt"
    source.write_text("new\n")
    result = await sftp(harness, f"put {source} {tmp_path}/y-canary\n")
    assert result.status != 0 and "Permission denied" in result.err
    assert not (tmp_path / "y-canary").exists()


async def test_sftp_still_works_for_what_no_rule_names(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    canary, _ = await start(harness, tmp_path)
    plain = tmp_path / "plain.txt"
    plain.write_text("fine\n")
    local = tmp_path / "plain-copy"
    result = await sftp(
        harness,
        f"ls {tmp_path}\nget {plain} {local}\nmkdir {tmp_path}/made\n"
        f"rename {plain} {tmp_path}/moved\n",
    )
    assert result.status == 0, result.err
    assert local.read_text() == "fine\n"
    assert (tmp_path / "made").is_dir() and (tmp_path / "moved").exists()
    assert canary.name in result.out  # listing is not among the rule's operations


@pytest.mark.parametrize("legacy", [False, True], ids=["sftp-mode", "legacy-O"])
async def test_scp_download_of_a_denied_path_copies_nothing(
    harness: GatewayHarness, tmp_path: Path, legacy: bool
) -> None:
    canary, _ = await start(harness, tmp_path)
    local = tmp_path / "copied"
    result = await scp(harness, *(["-O"] if legacy else []), remote(canary), str(local))
    assert result.status != 0
    assert not local.exists()
    assert "denied" in result.err.lower() or "Permission denied" in result.err


@pytest.mark.parametrize("legacy", [False, True], ids=["sftp-mode", "legacy-O"])
async def test_scp_upload_onto_a_denied_path_writes_nothing(
    harness: GatewayHarness, tmp_path: Path, legacy: bool
) -> None:
    _, _ = await start(harness, tmp_path)
    source = tmp_path / "source.txt"
    source.write_text("new\n")
    target = tmp_path / "z-canary"
    result = await scp(harness, *(["-O"] if legacy else []), str(source), remote(target))
    assert result.status != 0
    assert not target.exists()


@pytest.mark.parametrize("legacy", [False, True], ids=["sftp-mode", "legacy-O"])
async def test_scp_of_a_plain_file_still_works(
    harness: GatewayHarness, tmp_path: Path, legacy: bool
) -> None:
    _, _ = await start(harness, tmp_path)
    plain = tmp_path / "plain.txt"
    plain.write_text("fine\n")
    local = tmp_path / "copied"
    result = await scp(harness, *(["-O"] if legacy else []), remote(plain), str(local))
    assert result.status == 0, result.err
    assert local.read_text() == "fine\n"


async def test_a_held_sftp_read_waits_for_approval_then_runs(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    _, held = await start(harness, tmp_path)
    assert harness.runtime is not None
    local = tmp_path / "report-copy"
    client = asyncio.ensure_future(sftp(harness, f"get {held}/report.txt {local}\n"))
    deadline = time.monotonic() + 20
    while not await harness.runtime.broker.pending_holds():
        assert time.monotonic() < deadline, "no hold appeared"
        await asyncio.sleep(0.05)
    (hold,) = await harness.runtime.broker.pending_holds()
    assert hold.command == f"sftp read {held}/report.txt" and hold.rule == "held-reads"
    await asyncio.sleep(0.3)
    assert not local.exists()
    await harness.runtime.approvals.decide_hold(hold.id, BOB, approve=True, reason="ok")
    result = await client
    assert result.status == 0, result.err
    assert local.read_text() == "quarterly\n"


async def test_a_held_sftp_read_denied_by_the_approver_is_refused(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    _, held = await start(harness, tmp_path)
    assert harness.runtime is not None
    local = tmp_path / "report-copy"
    # `..` does not walk around the rule: the path is compared once normalised.
    client = asyncio.ensure_future(sftp(harness, f"get {held}/../{held.name}/report.txt {local}\n"))
    deadline = time.monotonic() + 20
    while not await harness.runtime.broker.pending_holds():
        assert time.monotonic() < deadline, "no hold appeared"
        await asyncio.sleep(0.05)
    (hold,) = await harness.runtime.broker.pending_holds()
    await harness.runtime.approvals.decide_hold(hold.id, BOB, approve=False, reason="not today")
    result = await client
    assert result.status != 0 and "Permission denied" in result.err
    assert "not today" in result.err
    assert not local.exists()


@pytest.mark.parametrize(
    "command",
    [
        "ln {canary} {dir}/innocent",
        "ln -s {canary} {dir}/innocent",
        "rename {canary} {dir}/innocent",
    ],
)
async def test_a_new_name_for_a_protected_file_is_refused_when_the_rule_says_so(
    harness: GatewayHarness, tmp_path: Path, command: str
) -> None:
    """A hard link, a symlink or a rename would let `get innocent` read the canary: a rule
    that lists `symlink` and `rename` refuses them (both paths of the request are judged)."""
    canary, _ = await start(harness, tmp_path)
    result = await sftp(harness, command.format(canary=canary, dir=tmp_path) + "\n")
    assert result.status != 0 and "Permission denied" in result.err
    assert not (tmp_path / "innocent").exists() and canary.exists()


@pytest.mark.parametrize(
    "remote_path", ["{dir}/x-can*", "{dir}/x-c$(echo an)ary", "~/../..{canary}"]
)
async def test_legacy_scp_of_a_path_the_remote_shell_expands_is_not_allowed(
    harness: GatewayHarness, tmp_path: Path, remote_path: str
) -> None:
    """`scp -O` makes the target's shell expand the path: a glob or a substitution that may
    name the canary is never allowed (the default unparsable action holds it; with no
    approver configured for that, it is refused)."""
    canary, _ = await start(harness, tmp_path)
    local = tmp_path / "copied"
    path = remote_path.format(dir=tmp_path, canary=canary)
    result = await scp(harness, "-O", remote(path), str(local))
    assert result.status != 0
    assert not local.exists()


async def test_a_legacy_scp_upload_into_a_directory_cannot_name_a_denied_file(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    """`scp -O w-canary host:DIR/` runs `scp -t DIR/` on the target, and the file's name comes
    later in the stream: the gateway cannot vouch for it, so the upload does not run."""
    _, _ = await start(harness, tmp_path)
    local = tmp_path / "local"
    local.mkdir()
    (local / "w-canary").write_text("new\n")
    drop = tmp_path / "drop"
    drop.mkdir()
    result = await scp(harness, "-O", str(local / "w-canary"), remote(f"{drop}/"))
    assert result.status != 0
    assert not (drop / "w-canary").exists()
