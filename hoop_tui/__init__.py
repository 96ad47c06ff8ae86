"""The composition root: the `hoop-tui` command line and, later, the Textual workstation.

Only this package may import Textual; it wires `proxy`, `storage` and `replay` together.
"""

__version__ = "0.1.0"
