"""The gateway host CA: keys made once and kept, certificates a real ssh-keygen accepts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from proxy.ssh.hostkeys import HostKeys


def test_keys_persist_with_owner_only_permissions(tmp_path: Path) -> None:
    first = HostKeys(tmp_path / "ssh")
    again = HostKeys(tmp_path / "ssh")
    assert first.known_hosts_line() == again.known_hosts_line()
    assert first.known_hosts_line().startswith("@cert-authority * ssh-ed25519 ")
    for name in ("host_ca", "host_key"):
        assert (tmp_path / "ssh" / name).stat().st_mode & 0o777 == 0o600


@pytest.mark.programs
def test_target_certificate_names_the_target(tmp_path: Path) -> None:
    keys = HostKeys(tmp_path / "ssh")
    cert = keys.certificate(("web1",))
    assert keys.certificate(("web1",)) is cert  # cached
    path = tmp_path / "web1-cert.pub"
    path.write_bytes(cert.export_certificate())
    shown = subprocess.run(
        ["ssh-keygen", "-L", "-f", str(path)], capture_output=True, text=True, check=True
    ).stdout
    assert "host certificate" in shown
    assert "web1" in shown.split("Principals:")[1]
