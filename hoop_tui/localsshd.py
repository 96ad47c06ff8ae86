"""A private OpenSSH sshd on a loopback port, with no system configuration: the `local` target
of `hoop-tui up` (a login shell on this host, through the gateway), and the target the tests
log in to.

Its own host key, its own authorized_keys (holding only the gateway's target key), internal
sftp. It logs in the current user, which is what a target account looks like to the gateway.
"""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from storage.private import private_dir

SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 10.0
) -> None:
    """Wait until something accepts on 127.0.0.1:port; fail with the server's log if it died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"server did not listen on {port} within {timeout} s:\n{log.read_text()}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def keygen(path: Path, comment: str = "") -> str:
    """Make an Ed25519 key pair at `path` (and path.pub); return the public key line."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
    )
    return path.with_name(path.name + ".pub").read_text().strip()


def _key(path: Path, comment: str) -> str:
    """The key pair at `path`, made if it is not there yet."""
    public = path.with_name(path.name + ".pub")
    return public.read_text().strip() if public.exists() else keygen(path, comment)


@dataclass
class Sshd:
    directory: Path
    port: int
    host_key: str  # the public host key line, as a target's pinned host_key
    user: str
    key_file: Path  # the private key the gateway uses to log in (in authorized_keys)
    process: subprocess.Popen[bytes]

    @property
    def log(self) -> str:
        return (self.directory / "sshd.log").read_text()


def start_sshd(directory: Path, port: int | None = None) -> Sshd:
    """Start sshd in `directory` (made on first use, keys kept for the next start)."""
    private_dir(directory)  # keys and its log: nobody else's to read
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation dir
    host_public = _key(directory / "host_ed25519", "target-host")
    target_public = _key(directory / "gateway_target_key", "hoop-gateway")
    (directory / "authorized_keys").write_text(target_public + "\n")
    port = port or free_port()
    config = directory / "sshd_config"
    config.write_text(
        f"""Port {port}
ListenAddress 127.0.0.1
HostKey {directory}/host_ed25519
PidFile {directory}/sshd.pid
AuthorizedKeysFile {directory}/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
AllowTcpForwarding yes
GatewayPorts no
AcceptEnv LANG LC_* HOOP_TEST_*
PrintMotd no
PrintLastLog no
MaxStartups 100:30:200
MaxSessions 100
Subsystem sftp internal-sftp
LogLevel VERBOSE
"""
    )
    log = directory / "sshd.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(config)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        wait_for_port(port, process, log)
    except Exception:
        stop(process)
        raise
    return Sshd(
        directory=directory,
        port=port,
        host_key=" ".join(host_public.split()[:2]),
        user=getpass.getuser(),
        key_file=directory / "gateway_target_key",
        process=process,
    )
