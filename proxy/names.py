"""How two spellings of a name are compared: the one rule every comparison of people uses."""

from __future__ import annotations

import unicodedata


def fold_name(name: str) -> str:
    """The spelling-independent form of a user or group name, the way LDAP's caseIgnoreMatch
    compares a `uid`: Unicode NFKC, case folded, outer spaces dropped, inner runs of spaces as
    one. Two spellings that fold alike can reach the same person, so they count as one."""
    return " ".join(unicodedata.normalize("NFKC", name).split()).casefold()
