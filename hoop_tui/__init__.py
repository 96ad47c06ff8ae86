"""The composition root: the `hoop-tui` command line and, later, the Textual workstation.

Only this package may import Textual; it wires `proxy`, `storage` and `replay` together.
"""

from proxy.quiet import silence_known_dependency_warnings

__version__ = "0.1.0"

# Every entry point (`hoop-tui`, `python3 -m hoop_tui`, the gateway it starts) imports this
# package before asyncssh, so the filter is in place when asyncssh first warns.
silence_known_dependency_warnings()
