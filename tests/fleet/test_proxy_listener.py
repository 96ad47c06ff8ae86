"""The gateway behind HAProxy: the caller's real address reaches the session and its
recording through the PROXY protocol (v1 and v2), and only from trusted_proxies."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.fleet.proxy_protocol import v1_header, v2_header
from tests.fixtures.gateway import GatewayHarness, recordings
from tests.fixtures.haproxy import Backend, HAProxy


@pytest.fixture
def haproxy_dir(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "haproxy"
    directory.mkdir()
    yield directory


async def banner(port: int, send: bytes) -> bytes:
    """What the gateway answers to a raw connection that first sends `send`."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(send)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(200), 10)
    except ConnectionResetError:  # closed with our bytes unread: refused all the same
        return b""
    finally:
        writer.close()


@pytest.mark.parametrize("proxy", ["send-proxy", "send-proxy-v2"])
async def test_a_caller_through_haproxy_is_recorded_with_its_own_address(
    harness: GatewayHarness, haproxy_dir: Path, proxy: str
) -> None:
    harness.add_user("alice")
    harness.add_target("web1")
    harness.gateway_settings["trusted_proxies"] = ["127.0.0.1"]
    await harness.start()
    balancer = HAProxy(haproxy_dir, {"ssh": [Backend("a", harness.port, proxy)]})
    balancer.start()
    try:
        result = await harness.run(
            "ssh",
            "-b",
            "127.0.0.2",  # the caller's own address; HAProxy reaches the gateway from 127.0.0.1
            "-p",
            str(balancer.ports["ssh"]),
            "alice+web1@127.0.0.1",
            "echo through-haproxy",
            user="alice",
        )
        assert result.status == 0, result.err
        assert "through-haproxy" in result.out
        (recorded,) = await recordings(harness)
        assert recorded.header.client.startswith("127.0.0.2:")
    finally:
        balancer.stop()


async def test_a_direct_caller_is_refused_without_a_header_from_a_trusted_address(
    harness: GatewayHarness,
) -> None:
    harness.add_user("alice")
    harness.add_target("web1")
    harness.gateway_settings["trusted_proxies"] = ["127.0.0.1"]
    await harness.start()
    # from a trusted address, the header is required: SSH straight away is not one
    assert await banner(harness.port, b"SSH-2.0-OpenSSH_9.2\r\n") == b""
    assert await banner(harness.port, b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 22\r\n") == b""
    good = v1_header(("198.51.100.4", 4000), ("127.0.0.1", harness.port))
    assert (await banner(harness.port, good)).startswith(b"SSH-2.0-")


async def test_a_header_from_an_untrusted_address_is_refused(harness: GatewayHarness) -> None:
    harness.add_user("alice")
    harness.add_target("web1")
    harness.gateway_settings["trusted_proxies"] = ["192.0.2.10"]  # HAProxy elsewhere
    await harness.start()
    for forged in (
        v1_header(("198.51.100.4", 4000), ("127.0.0.1", 22)),
        v2_header(("198.51.100.4", 4000), ("127.0.0.1", 22)),
    ):
        assert await banner(harness.port, forged) == b""
    # a direct caller without a header is served as before
    assert (await banner(harness.port, b"SSH-2.0-OpenSSH_9.2\r\n")).startswith(b"SSH-2.0-")
    result = await harness.ssh_direct("alice+web1", "echo direct", user="alice")
    assert result.status == 0 and "direct" in result.out, result.err


def test_trusted_networks_match_mapped_addresses() -> None:
    from proxy.fleet.listener import is_trusted, parse_trusted

    trusted = parse_trusted(["10.0.1.0/24", "::1"])
    assert is_trusted("10.0.1.7", trusted)
    assert is_trusted("::ffff:10.0.1.7", trusted)
    assert is_trusted("::1", trusted)
    assert not is_trusted("10.0.2.7", trusted)
    assert not is_trusted("not-an-address", trusted)


async def test_a_caller_is_let_in_when_the_gateway_holds_over_a_thousand_descriptors(
    harness: GatewayHarness,
) -> None:
    """A busy gateway holds more than 1023 descriptors (two sockets and a recording per
    session); looking at what a caller from an address outside trusted_proxies sent first
    must not use select(), which cannot take them."""
    import os

    harness.add_user("alice")
    harness.add_target("web1")
    harness.gateway_settings["trusted_proxies"] = ["192.0.2.1"]  # not this caller
    await harness.start()
    held = [os.open("/dev/null", os.O_RDONLY) for _ in range(1100)]
    try:
        answer = await banner(harness.port, b"SSH-2.0-OpenSSH_9.2\r\n")
        assert answer.startswith(b"SSH-2.0-"), answer
    finally:
        for fd in held:
            os.close(fd)
