"""Warnings from dependencies that say nothing to a user of hoop_tui, filtered one by one.

asyncssh still names DSA key classes in its type annotations, and cryptography 47+ warns on each
name at import: ten lines on stderr before every command's own output. hoop_tui neither offers
nor accepts DSA keys, so that exact warning, from asyncssh's crypto modules only, is dropped.
Nothing else is filtered: a new warning from a dependency still shows (and a test catches it).
"""

from __future__ import annotations

import warnings


def silence_known_dependency_warnings() -> None:
    """Install the filters; call before the first import of asyncssh."""
    try:
        from cryptography.utils import CryptographyDeprecationWarning
    except ImportError:  # pragma: no cover - cryptography is a hard dependency of asyncssh
        return
    warnings.filterwarnings(
        "ignore",
        message="DSA is deprecated",
        category=CryptographyDeprecationWarning,
        module=r"asyncssh\.crypto\.",
    )
