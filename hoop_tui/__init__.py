"""The composition root: the `hoop-tui` command line and the Textual workstation.

Where it sits: on top. Only this package may import Textual; it wires `proxy`, `storage` and
`replay` together, and nothing below imports it. `cli` parses the command line and hands each
subcommand to a module of `commands`; `workstation` is the Textual app (queue, recordings,
replay, live sessions); `localrec` records a local program (`hoop-tui rec`) and `localsshd`
runs the private sshd of `hoop-tui up`'s `local` target; `errors` is the one error a command
reports to its user.
"""

from proxy.quiet import silence_known_dependency_warnings

__version__ = "0.1.0"

# Every entry point (`hoop-tui`, `python3 -m hoop_tui`, the gateway it starts) imports this
# package before asyncssh, so the filter is in place when asyncssh first warns.
silence_known_dependency_warnings()
