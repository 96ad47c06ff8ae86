"""Port forwarding through a target: refused unless configured, recorded when allowed."""

from __future__ import annotations

import asyncio

import pytest

from tests.fixtures.gateway import GatewayHarness, only_recording
from tests.fixtures.processes import free_port

pytestmark = pytest.mark.timeout(60)


async def echo_server() -> tuple[asyncio.Server, int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data.upper())
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def end_process(process: asyncio.subprocess.Process) -> None:
    """SIGTERM, then SIGKILL if the client has not gone within 5 s."""
    if process.returncode is None:
        process.terminate()
    try:
        await asyncio.wait_for(process.wait(), 5)
    except TimeoutError:
        process.kill()
        await process.wait()


async def forward_and_talk(harness: GatewayHarness, echo_port: int) -> tuple[bytes, str]:
    """Run `ssh -N -L`, send bytes through the forward; the reply and ssh's stderr."""
    local_port = free_port()
    process = await asyncio.create_subprocess_exec(
        "ssh",
        *harness.ssh_args("alice"),
        "-N",
        "-o",
        "ExitOnForwardFailure=yes",
        "-L",
        f"127.0.0.1:{local_port}:127.0.0.1:{echo_port}",
        "-p",
        str(harness.port),
        "alice+web1@127.0.0.1",
        stdin=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        for _ in range(500):
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", local_port)
                break
            except OSError:
                await asyncio.sleep(0.02)
        else:
            raise AssertionError("the local forward never listened")
        try:
            writer.write(b"hello forward")
            writer.write_eof()
            reply = await asyncio.wait_for(reader.read(), 10)
        except OSError:  # a refused forward: ssh closes the accepted socket at once
            reply = b""
        writer.close()
    finally:
        await end_process(process)
    assert process.stderr is not None
    return reply, (await asyncio.wait_for(process.stderr.read(), 10)).decode()


async def test_local_forward_is_refused_by_default(harness: GatewayHarness) -> None:
    harness.add_user("alice", groups=("dev",))
    harness.add_target("web1")
    await harness.start()
    server, port = await echo_server()
    async with server:
        reply, stderr = await forward_and_talk(harness, port)
    assert reply == b""
    assert "port forwarding is not allowed on target web1" in stderr


async def test_allowed_local_forward_relays_and_is_recorded(harness: GatewayHarness) -> None:
    harness.add_user("alice", groups=("dev",))
    harness.add_target("web1", port_forwarding=["local"])
    await harness.start()
    server, port = await echo_server()
    async with server:
        reply, _ = await forward_and_talk(harness, port)
    assert reply == b"HELLO FORWARD"
    recorded = await only_recording(harness)
    forwards = recorded.of("port_forward")
    assert [(e["action"], e["direction"], e["host"], e["port"]) for e in forwards] == [
        ("open", "local", "127.0.0.1", port),
        ("close", "local", "127.0.0.1", port),
    ]
    assert (forwards[1]["bytes_out"], forwards[1]["bytes_in"]) == (13, 13)


async def test_allowed_remote_forward_brings_connections_back(harness: GatewayHarness) -> None:
    harness.add_user("alice", groups=("dev",))
    harness.add_target("web1", port_forwarding=["remote"])
    await harness.start()
    server, echo_port = await echo_server()
    remote_port = free_port()
    process = await asyncio.create_subprocess_exec(
        "ssh", *harness.ssh_args("alice"), "-N", "-o", "ExitOnForwardFailure=yes",
        "-R", f"127.0.0.1:{remote_port}:127.0.0.1:{echo_port}",
        "-p", str(harness.port), "alice+web1@127.0.0.1",
        stdin=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with server:
            # sshd listens as soon as asked, a moment before the gateway's listener is
            # registered: a connection in that moment is refused, so try until one goes through.
            for _ in range(500):
                try:
                    reader, writer = await asyncio.open_connection("127.0.0.1", remote_port)
                    writer.write(b"back again")
                    writer.write_eof()
                    reply = await asyncio.wait_for(reader.read(), 10)
                    writer.close()
                except OSError:
                    reply = b""
                if reply:
                    break
                await asyncio.sleep(0.02)
            assert reply == b"BACK AGAIN"
    finally:
        await end_process(process)
    recorded = await only_recording(harness)
    opened = recorded.of("port_forward")[0]
    assert (opened["action"], opened["direction"], opened["port"]) == (
        "open",
        "remote",
        remote_port,
    )


async def test_remote_forward_is_refused_by_default(harness: GatewayHarness) -> None:
    harness.add_user("alice", groups=("dev",))
    harness.add_target("web1")
    await harness.start()
    result = await harness.run(
        "ssh", "-N", "-o", "ExitOnForwardFailure=yes", "-R", f"127.0.0.1:{free_port()}:127.0.0.1:9",
        "-p", str(harness.port), "alice+web1@127.0.0.1", user="alice",
    )  # fmt: skip
    assert result.status == 255
    assert "remote port forwarding failed" in result.err
