"""One module per group of `hoop-tui` subcommands; each exposes `register(subparsers)`."""
