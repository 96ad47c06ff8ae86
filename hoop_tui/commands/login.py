"""`hoop-tui login`: sign in once, then use plain `ssh` and `psql` until the sign-in expires.

It makes (or reuses) a key pair in `--dir` (default `~/.hoop`), connects to the gateway's SSH
port and signs in: a person through the OIDC device flow (the verification URL and code are
printed; approve them in a browser), an agent with its client-credentials token from the
environment variable `--token-env` names. The gateway answers with an SSH certificate for the
key, valid as long as the token, and a gateway password for PostgreSQL. They are written to
`--dir`: `id_hoop`, `id_hoop-cert.pub` (ssh picks the certificate up next to the key) and
`pgpass` (libpq's format; point PGPASSFILE at it). The gateway's host key is checked against
`--known-hosts` (default `~/.ssh/known_hosts`, where `hoop-tui gateway --known-hosts` goes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from hoop_tui.errors import CommandError

LOGIN_COMMAND = "hoop-login"  # proxy.oidc.certs.LOGIN_COMMAND; not imported, to start fast


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "login",
        help="sign in once (OIDC device flow, or an agent's token) for an SSH certificate "
        "and a PostgreSQL password",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--gateway", required=True, metavar="HOST[:PORT]", help="its SSH port")
    parser.add_argument("--user", default=os.environ.get("USER", ""), help="your name there")
    parser.add_argument(
        "--token-env",
        metavar="VAR",
        help="an agent: the environment variable holding its access token",
    )
    parser.add_argument("--dir", default="~/.hoop", help="where the key and credentials go")
    parser.add_argument("--known-hosts", default="~/.ssh/known_hosts", metavar="FILE")
    parser.set_defaults(handler=run_login)


def _key(directory: Path) -> Any:
    import asyncssh

    path = directory / "id_hoop"
    if path.exists():
        return asyncssh.read_private_key(path)
    key = asyncssh.generate_private_key("ssh-ed25519", comment="hoop-tui login")
    _private_write(path, key.export_private_key())
    (directory / "id_hoop.pub").write_bytes(key.export_public_key())
    return key


def _private_write(path: Path, data: bytes) -> None:
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    os.replace(path.with_suffix(".tmp"), path)


async def _sign_in(args: argparse.Namespace, key: Any, token: str | None) -> dict[str, Any]:
    import asyncssh

    host, _, port = args.gateway.rpartition(":") if ":" in args.gateway else (args.gateway, "", "")

    answered: list[bool] = []
    tries: list[bool] = []

    class Client(asyncssh.SSHClient):
        def auth_banner_received(self, msg: str, lang: str) -> None:
            print(msg.rstrip(), file=sys.stderr, flush=True)  # why a sign-in was refused

        def kbdint_auth_requested(self) -> str | None:
            # once, with no submethods: the gateway chooses (device flow, or a token prompt)
            if tries:
                return None
            tries.append(True)
            return ""

        def kbdint_challenge_received(
            self, name: str, instructions: str, lang: str, prompts: Any
        ) -> list[str] | None:
            if instructions:
                print(instructions.rstrip("\n"), file=sys.stderr, flush=True)
            if not prompts:
                return []
            if token is not None and len(prompts) == 1 and not answered:
                answered.append(True)
                return [token]
            return None  # a password prompt: this command signs in with OIDC only

    public = key.export_public_key().decode("ascii").strip()
    known_hosts = Path(args.known_hosts).expanduser()
    if not known_hosts.exists():
        raise CommandError(
            f"{known_hosts} does not exist: add the gateway's line from "
            "`hoop-tui gateway --known-hosts` to it, so its host key can be checked"
        )
    async with asyncssh.connect(
        host or args.gateway,
        int(port or 2222),
        username=args.user,
        client_factory=Client,
        known_hosts=str(known_hosts),
        client_keys=None,
        agent_path=None,
        preferred_auth="keyboard-interactive",
        login_timeout=900,
    ) as conn:
        result = await conn.run(f"{LOGIN_COMMAND} {public}", check=False)
    if result.exit_status != 0:
        message = str(result.stderr or "").strip() or f"exit status {result.exit_status}"
        raise CommandError(message)
    answer: dict[str, Any] = json.loads(str(result.stdout))
    return answer


def run_login(args: argparse.Namespace) -> int:
    import asyncssh

    token = None
    if args.token_env:
        token = os.environ.get(args.token_env)
        if not token:
            raise CommandError(f"${args.token_env} is empty: put the agent's access token there")
    directory = Path(args.dir).expanduser()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = _key(directory)
    try:
        answer = asyncio.run(_sign_in(args, key, token))
    except (OSError, asyncssh.Error) as exc:
        raise CommandError(f"cannot sign in at {args.gateway}: {exc}") from None
    (directory / "id_hoop-cert.pub").write_text(answer["certificate"] + "\n")
    _private_write(directory / "pgpass", f"*:*:*:{answer['name']}:{answer['password']}\n".encode())
    until = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(answer["valid_before"]))
    print(f"Signed in as {answer['name']} ({answer['kind']}) until {until}.")
    print(f"  ssh -i {directory / 'id_hoop'} -p PORT {answer['name']}+TARGET@GATEWAY")
    print(f'  PGPASSFILE={directory / "pgpass"} psql "host=GATEWAY user={answer["name"]} ..."')
    return 0
