"""Examples under every subcommand's `--help`, and a description where a command had none.

Kept in one table so that each command module registers its arguments and this file says how
people use them; `hoop_tui.cli` applies it after every module has registered.
"""

from __future__ import annotations

import argparse

# command -> (description used when the command's parser has none, example lines)
EXAMPLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "up": ("", ("hoop-tui up", "hoop-tui up --data-dir /srv/hoop   # another place")),
    "rec": (
        "Record a local program in this terminal, like `asciinema rec`, into a signed "
        "recording; with no program, your shell.",
        ("hoop-tui rec", "hoop-tui rec -c 'make deploy'", "hoop-tui rec -- htop"),
    ),
    "info": (
        "Show a recording's header (who, where, when, terminal), its size, counts of each "
        "event type and whether it was closed cleanly.",
        ("hoop-tui info rec.hrec", "hoop-tui info rec.hrec --json | jq .header"),
    ),
    "verify": (
        "",
        (
            "hoop-tui verify rec.hrec",
            "hoop-tui verify hoop-data/recordings/2026/*/*/*.hrec --key recording_key.pub",
        ),
    ),
    "export": (
        "Write a recording as asciicast v2 (for asciinema play), a readable transcript, or "
        "lossless JSON lines; --masks applies today's [[masks]] rules on the way out.",
        (
            "hoop-tui export rec.hrec --format asciicast -o rec.cast",
            "hoop-tui export rec.hrec --format text | less",
            "hoop-tui export rec.hrec --format jsonl --masks gateway.toml",
        ),
    ),
    "import-cast": (
        "",
        ("hoop-tui import-cast demo.cast", "hoop-tui import-cast a.cast -o a.hrec"),
    ),
    "sessions": (
        "Search the session catalogue: who reached which target when, how it ended, and "
        "where its recording is.",
        (
            "hoop-tui sessions --since 7d",
            "hoop-tui sessions --user alice --target web1 --json",
        ),
    ),
    "search": (
        "",
        (
            "hoop-tui search 'rm -rf'",
            "hoop-tui search 'drop table' --target prod-db --since 7d --json",
        ),
    ),
    "push-recordings": (
        "",
        ("hoop-tui push-recordings --dry-run", "hoop-tui push-recordings --keep"),
    ),
    "prune": (
        "Delete recordings older than a duration together with their catalogue rows.",
        ("hoop-tui prune --older-than 90d --dry-run", "hoop-tui prune --older-than 90d"),
    ),
    "gateway": ("", ("hoop-tui gateway --check", "hoop-tui gateway --config /etc/hoop/gw.toml")),
    "hash-password": ("", ("printf '%s\\n' \"$PW\" | hoop-tui hash-password",)),
    "holds": (
        "List held commands waiting for approval (--all: decided ones too), with who asked, "
        "where, the rule and the time left.",
        ("hoop-tui holds", "hoop-tui holds --all"),
    ),
    "approve": (
        "Approve a held command (h-...) or a just-in-time access request (g-...). You cannot "
        "approve your own.",
        ("hoop-tui approve h-1a2b3c --reason 'ticket 42'", "hoop-tui approve g-9f8e7d"),
    ),
    "deny": (
        "Deny a held command or an access request; the requester sees your reason.",
        ("hoop-tui deny h-1a2b3c --reason 'not during the freeze'",),
    ),
    "grants": (
        "List just-in-time access grants: requested, active and ended.",
        ("hoop-tui grants",),
    ),
    "request": (
        "Ask for time-bound access to a target that requires a grant; an approver decides.",
        ("hoop-tui request web1 --for 1h --reason 'incident 42'",),
    ),
    "revoke": (
        "End an access grant now; live sessions that depend on it end too.",
        ("hoop-tui revoke g-9f8e7d --reason 'incident closed'",),
    ),
    "live": (
        "List the sessions live on the gateway now: who, where, since when, and the id that "
        "`watch` and `end` take.",
        ("hoop-tui live",),
    ),
    "watch": (
        "Follow a live session's output, read-only; Ctrl-C stops.",
        ("hoop-tui watch 0cebb3c3",),
    ),
    "end": (
        "End a live session now; its user is told your reason.",
        ("hoop-tui end 0cebb3c3 --reason 'incident over'",),
    ),
    "audit": (
        "Who decided what, and when: approvals, denials, grants and ended sessions.",
        ("hoop-tui audit",),
    ),
    "policy": (
        "Test the [[rules]] of a gateway configuration without a gateway.",
        (
            "hoop-tui policy check --user alice --target web1 --command 'rm -rf /var/lib'",
            "hoop-tui policy check --user bob --target db1 --sql 'delete from t'",
        ),
    ),
    "screen": ("", ("hoop-tui screen rec.hrec --at 12.5", "hoop-tui screen demo.cast --at 3")),
    "play": ("", ("hoop-tui play rec.hrec --speed 2 --idle-limit 1",)),
    "tui": ("", ("hoop-tui tui", "hoop-tui tui --offline --data-dir hoop-data")),
    "masks": ("", ("hoop-tui masks dry-run --rule-file new-masks.toml --last 50",)),
    "state": (
        "The shared PostgreSQL state of a fleet ([state] url): bring its schema up to date, or "
        "copy an embedded gateway's state into it.",
        (
            "hoop-tui state migrate --config gateway.toml",
            "hoop-tui state copy --from hoop-data --config gateway.toml",
        ),
    ),
    "status": (
        "What this gateway and its fleet look like now: the state store, the instances, live "
        "sessions, pending holds and the recording spool; needs no running gateway.",
        ("hoop-tui status", "hoop-tui status --json"),
    ),
    "login": (
        "",
        (
            "hoop-tui login --gateway gw.example.com:2222 --user alice",
            "hoop-tui login --gateway gw.example.com:2222 --user ci-bot --token-env CI_TOKEN",
        ),
    ),
}


class ExamplesFormatter(argparse.HelpFormatter):
    """Wraps descriptions as usual, and keeps the examples' lines as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples:\n"):
            return "\n".join(indent + line for line in text.splitlines())
        return super()._fill_text(text, width, indent)


def add_examples(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Give each registered subcommand its examples, and a description where it had none."""
    for name, parser in subparsers.choices.items():
        description, examples = EXAMPLES.get(name, ("", ()))
        if not parser.description and description:
            parser.description = description
        if examples and not parser.epilog:
            parser.epilog = "examples:\n" + "\n".join(f"  {line}" for line in examples)
            parser.formatter_class = ExamplesFormatter
