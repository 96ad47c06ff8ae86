"""The `hoop-tui` subcommands, one module per group; each exposes `register(subparsers)`.

Where it sits: under `hoop_tui.cli`, which registers them all; each command imports the parts
of `proxy`, `storage` and `replay` it needs when it runs, so `hoop-tui --help` stays quick.
`local` (up, rec), `gateway`, `workstation` (tui), `approvals` (holds, approve, deny, grants),
`login` (OIDC sign-in), `policy` (policy check), `masks`, `recordings` (sessions, info,
verify, export, import-cast, prune), `replay` (screen, play), `search`, `state` (a fleet's
shared state) and `status`; `common` holds what they share, `examples` the examples each
`--help` ends with.
"""
