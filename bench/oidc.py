"""What verifying an agent's access token costs the gateway (issue 16): the first token (the
provider's discovery document and key set fetched) and then each token against the cached key
set, against the test provider (npm oidc-provider on loopback, tests/fixtures/oidc).

    python bench/oidc.py [--tokens 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proxy.oidc.client import OidcClient
from proxy.oidc.config import OidcConfig
from tests.fixtures.oidc_provider import GATEWAY_CLIENT, RESOURCE, start_provider


async def run(tokens: int) -> None:
    provider = start_provider(Path(tempfile.mkdtemp()), agents=["ci-bot"])
    try:
        config = OidcConfig(issuer=provider.issuer, client_id=GATEWAY_CLIENT, audience=RESOURCE)
        client = OidcClient(config)
        token = provider.agent_token("ci-bot")
        started = time.perf_counter()
        await client.verify_access_token(token)
        first = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(tokens):
            await client.verify_access_token(token)
        each = (time.perf_counter() - started) / tokens
        print(f"first token (discovery + key set fetched): {first * 1000:.1f} ms")
        print(f"each further token (cached key set, n={tokens}): {each * 1e6:.0f} us")
    finally:
        provider.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2000)
    asyncio.run(run(parser.parse_args().tokens))


if __name__ == "__main__":
    main()
