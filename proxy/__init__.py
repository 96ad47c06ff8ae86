"""The data path: everything between a caller and a target.

Where it sits: under `hoop_tui` (the command line and workstation that compose it), over
`replay` and `storage`, which it uses to render, record and mask (the masking engine is
`storage.masking`); it never imports Textual or `hoop_tui`. Protocol logic is sans-IO where it
can be (bytes in, events out); thin asyncio shells do the I/O.

Subpackages: `ssh` (the SSH gateway: server, links, channels, strict shells, file transfers),
`pg` (the PostgreSQL gateway: wire protocol, statement analysis, the session relay), `holds`
(held commands, approvals, grants, the control socket and console), `oidc` (callers who sign
in with OpenID Connect), `fleet` (several gateways sharing state behind a balancer).

Modules, in the order a session meets them: `config` (the TOML file, validated whole), `auth`
and `names` (who is calling), `policy` (rules -> verdict, pure), `session` (one caller's
session on one target, either protocol: recording, back-pressure, live tap, the end) and
`recording` (its header and input filter); for SSH shells `shell` (what a line runs),
`line_detector` and `shell_gate` (guard mode: the line on the screen at Enter), `line_editor`
(strict mode), `inspection` (exec and shell lines to verdicts); `notify` (webhooks about
holds); `live` (live sessions on the control socket: listed, watched, the context beside a
hold); `runtime` (a running gateway, composed); `quiet` (dependency warnings filtered).
"""

from proxy.quiet import silence_known_dependency_warnings

# The gateway imports asyncssh; asyncssh's DSA warning says nothing to its operator.
silence_known_dependency_warnings()
