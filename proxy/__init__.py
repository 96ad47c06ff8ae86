"""The data path: everything between a caller and a target.

Protocol logic is sans-IO (bytes in, events out); thin asyncio shells do the I/O. This package
never imports Textual; it hands what it sees to `storage` for recording.
"""

from proxy.quiet import silence_known_dependency_warnings

# The gateway imports asyncssh; asyncssh's DSA warning says nothing to its operator.
silence_known_dependency_warnings()
