"""`hoop-tui end` on a session whose only channel is a port forward: the forward's TCP
connection is cut on both sides and the client is told, not left relaying after the end."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import time

import pytest

from tests.fixtures.gateway import GatewayHarness
from tests.fixtures.processes import free_port
from tests.proxy.ssh.test_forwarding import end_process

pytestmark = pytest.mark.timeout(90)


async def test_ending_a_session_cuts_its_open_forward(harness: GatewayHarness) -> None:
    harness.add_user("alice", groups=("dev",))
    harness.add_user("bob", groups=("oncall",))
    harness.add_target("web1", port_forwarding=["local"])
    harness.operators[getpass.getuser()] = "bob"
    await harness.start_runtime()
    closed = asyncio.Event()

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data.upper())
                await writer.drain()
        closed.set()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    echo_port = server.sockets[0].getsockname()[1]
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
        writer.write(b"hello")
        assert await asyncio.wait_for(reader.read(5), 10) == b"HELLO"
        deadline = time.monotonic() + 15
        while True:
            code, out, err = await harness.hoop("live")
            if "alice" in out:
                break
            assert time.monotonic() < deadline, (out, err)
            await asyncio.sleep(0.2)
        session_id = out.splitlines()[1].split()[0]
        code, _, err = await harness.hoop("end", session_id, "--reason", "over")
        assert code == 0, err
        await asyncio.wait_for(closed.wait(), 10)
        with contextlib.suppress(OSError):
            writer.write(b"after")
        rest = await asyncio.wait_for(reader.read(), 10)
        assert b"AFTER" not in rest
        await asyncio.wait_for(process.wait(), 10)
        writer.close()
    finally:
        await end_process(process)
        server.close()
