"""`hoop-tui policy check`: what the gateway would decide for a command, and which rule says so.

People test their `[[rules]]` with it before a real session meets them. It reads the same
configuration file as the gateway and runs the same pure policy code; nothing is contacted.
SQL (`--sql`) goes through the PostgreSQL gateway's own path: its parser gives the classes and
tables of each statement, and a fresh session's decider judges them (read-only targets, rules
with `tables`, `EXECUTE` of a statement the same string PREPAREs, `[postgres] unparsable`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hoop_tui.commands.common import add_config_arguments
from hoop_tui.errors import CommandError
from proxy.config import (
    DEFAULT_CONFIG_NAME,
    ConfigError,
    GatewayConfig,
    load_config,
    resolve_config_path,
)

# The policy engine (and bashlex's parser tables, 0.3 s) load when a check runs, not for every
# `hoop-tui` command that only registers this one.
if TYPE_CHECKING:
    from proxy.pg.classify import Classified
    from proxy.policy import Caller, Policy, Verdict

EXIT_STATUS = {"allow": 0, "review": 3, "deny": 4}  # by Action value


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "policy", help="test the policy rules of a gateway configuration"
    )
    commands = parser.add_subparsers(dest="policy_command", metavar="SUBCOMMAND")
    check = commands.add_parser(
        "check",
        help="print the verdict for a command and the rule that gave it",
        description=(
            "Print what the gateway would decide for COMMAND typed by USER on TARGET, and the "
            "rule that decided. Exit status: 0 allow, 3 review, 4 deny, 1 configuration error."
        ),
    )
    check.add_argument("--user", required=True, help="the gateway user who types the command")
    check.add_argument("--target", required=True, help="the target the session is on")
    what = check.add_mutually_exclusive_group(required=True)
    what.add_argument("--command", help="a shell line, as typed into an interactive shell")
    what.add_argument("--exec", dest="exec_command", help="an SSH exec request's command")
    what.add_argument(
        "--sql",
        metavar="STATEMENT",
        help="SQL as a client sends it, judged like the PostgreSQL gateway judges it "
        "(classes and tables from its parser)",
    )
    what.add_argument(
        "--sql-class",
        action="append",
        dest="sql_classes",
        metavar="CLASS",
        help="a SQL statement class (repeat for several), e.g. ddl",
    )
    check.add_argument(
        "--group",
        action="append",
        default=[],
        metavar="GROUP",
        help="a group of the user, added to those [[users]] gives (e.g. for LDAP users)",
    )
    check.add_argument(
        "--service-account",
        action="store_true",
        help="treat the user as a service account (also taken from [[users]])",
    )
    check.add_argument("--json", action="store_true", help="print the verdict as JSON")
    add_config_arguments(check)
    check.set_defaults(handler=run_check)
    parser.set_defaults(handler=lambda _args: parser.print_help() or 2)


def run_check(args: argparse.Namespace) -> int:
    from proxy.policy import decide_exec, decide_shell, decide_sql

    config, policy = _load(args.config, args.data_dir)
    caller = _caller(config, args.user, args.group, args.service_account)
    found: Classified | None = None
    sql_notes: list[str] = []
    if args.sql is not None:
        verdict, found, sql_notes = _check_sql(config, policy, caller, args.target, args.sql)
        subject = args.sql
    elif args.sql_classes:
        verdict = decide_sql(policy, caller, args.target, set(args.sql_classes))
        subject = "SQL classes " + ", ".join(args.sql_classes)
        limited = [
            rule.name
            for rule in policy.rules
            if rule.tables and rule.applies_to(caller, args.target)
        ]
        if limited:
            sql_notes.append(
                f"rules limited to tables ({', '.join(limited)}) cannot match classes alone: "
                "give the statement with --sql"
            )
    elif args.exec_command is not None:
        verdict = decide_exec(policy, caller, args.target, args.exec_command)
        subject = args.exec_command
    else:
        verdict = decide_shell(policy, caller, args.target, args.command)
        subject = args.command
    notes = _notes(config, args.user, args.target, args.command or args.exec_command)
    notes += sql_notes
    if args.json:
        data = _as_json(verdict, caller, args.target, subject, policy, notes)
        if found is not None:
            data["statements"] = [
                {"text": s.text, "classes": sorted(s.classes), "tables": sorted(s.tables)}
                for s in found.statements
            ]
            data["parse_error"] = found.error
        print(json.dumps(data))
    else:
        if found is not None:
            _print_statements(found)
        _print(verdict, caller, args.target, policy, notes)
    return EXIT_STATUS[verdict.action.value]


def _check_sql(
    config: GatewayConfig, policy: Policy, caller: Caller, target: str, sql: str
) -> tuple[Verdict, Classified, list[str]]:
    """The verdict the PostgreSQL gateway gives `sql` as the first thing of a session."""
    from proxy.pg import classify as sqlclass
    from proxy.pg.server import PgTarget, make_decider, parse_pg_settings
    from proxy.pg.session import PgSession, UnparsableMode
    from proxy.policy import Action, Basis, Verdict

    try:
        settings = parse_pg_settings(config)
    except ConfigError as exc:
        raise CommandError(str(exc)) from None
    notes: list[str] = []
    pg_target = settings.target_for(target)
    if pg_target is None:
        pg_target = PgTarget(target, "", 0, target, "", ())
        if target in config.targets:
            notes.append(f"{target} is not a postgres target: judged as one without read_only")
    classifier = sqlclass.Classifier(sql_functions=settings.sql_functions)
    found = classifier(sql)
    if found.error is not None and settings.unparsable is UnparsableMode.SYNTAX_ERROR:
        message = f"syntax error (42601, nothing is sent): {found.error}"
        return Verdict(Action.DENY, Basis.UNPARSABLE, message, None, sql), found, notes
    session = PgSession(make_decider(policy, caller, pg_target), classifier, _no_recording)
    return session.verdict(found), found, notes


def _no_recording(event: object, *fields: object) -> bool:
    return True


def _print_statements(found: Classified) -> None:
    for statement in found.statements:
        classes = ", ".join(sorted(statement.classes)) or "none"
        tables = ", ".join(sorted(statement.tables)) or "none"
        print(f"sql:      {statement.text}")
        print(f"          classes: {classes}; tables: {tables}")
    if found.error is not None:
        print(f"parser:   {found.error}")


def _load(explicit: str | None, data_dir: str | None = None) -> tuple[GatewayConfig, Policy]:
    """--config; else the configuration kept in --data-dir (as `hoop-tui up` makes it); else
    the usual places."""
    if explicit is None and data_dir is not None:
        path = Path(data_dir) / DEFAULT_CONFIG_NAME
        if not path.is_file():
            raise CommandError(
                f"{data_dir}: holds no {DEFAULT_CONFIG_NAME}; give --config FILE for this gateway"
            )
    else:
        path = resolve_config_path(explicit)
    try:
        config = load_config(path)
        from proxy.policy import parse_policy

        return config, parse_policy(config.raw, path)
    except ConfigError as exc:
        raise CommandError(str(exc)) from None


def _caller(
    config: GatewayConfig, name: str, extra_groups: list[str], service_account: bool
) -> Caller:
    user = config.users.get(name)
    groups = set(extra_groups)
    if user is not None:
        groups.update(user.groups)
        service_account = service_account or user.service_account
    from proxy.policy import Caller

    agent = config.agents.get(name)  # an OIDC agent: its groups, owner and stricter defaults
    if agent is not None:
        groups.update(agent.groups)
        return Caller(
            name, frozenset(groups), kind="agent", owner=agent.owner, client_id=agent.client_id
        )
    return Caller(name, frozenset(groups), service_account)


def _notes(config: GatewayConfig, user: str, target: str, command: str | None) -> list[str]:
    notes: list[str] = []
    if user not in config.users and user not in config.agents:
        where = "in [[users]] nor, without a directory to ask, anywhere"
        if config.ldap is not None:
            where = "in [[users]]; an LDAP user's groups must be given with --group"
        notes.append(f"no user named {user!r} {where} (rules were still applied)")
    target_config = config.targets.get(target)
    if target_config is None and config.targets:
        notes.append(f"no target named {target!r} in {config.path} (rules were still applied)")
    elif target_config is not None and target_config.raw.get("jit") is True:
        notes.append(f"{target} requires just-in-time access: a session needs a live grant")
    if command is not None:
        from proxy.shell import ShellAnalysis, analyse_line

        analysis = analyse_line(command)
        if isinstance(analysis, ShellAnalysis) and len(analysis.commands) > 1:
            listed = "; ".join(simple.text for simple in analysis.commands)
            notes.append(f"simple commands checked: {listed}")
    return notes


def _rule_label(policy: Policy, verdict: Verdict) -> str:
    if verdict.rule is None:
        return "(none: a default decided)"
    rule = policy.rule(verdict.rule)
    return f"{verdict.rule} (rule #{rule.index})" if rule else verdict.rule


def _print(verdict: Verdict, caller: Caller, target: str, policy: Policy, notes: list[str]) -> None:
    who = caller.name + (" (service account)" if caller.service_account else "")
    if caller.agent:
        who += f" (agent of {caller.owner}, client {caller.client_id})"
    groups = ", ".join(sorted(caller.groups)) or "none"
    print(f"verdict:  {verdict.action.value}")
    print(f"rule:     {_rule_label(policy, verdict)}")
    print(f"why:      {verdict.basis.value}")
    if verdict.command:
        print(f"command:  {verdict.command}")
    if verdict.message:
        print(f"message:  {verdict.message}")
    if verdict.review is not None:
        approvers = ", ".join(verdict.review.approvers) or "nobody (set [policy].approvers)"
        print(
            f"review:   {verdict.review.approvals} approval(s) from {approvers}, "
            f"expires after {verdict.review.timeout_seconds}s"
        )
    print(f"caller:   {who}, groups: {groups}; target: {target}")
    for note in notes:
        print(f"note:     {note}", file=sys.stdout)


def _as_json(
    verdict: Verdict,
    caller: Caller,
    target: str,
    subject: str,
    policy: Policy,
    notes: list[str],
) -> dict[str, Any]:
    rule = policy.rule(verdict.rule) if verdict.rule else None
    return {
        "action": verdict.action.value,
        "basis": verdict.basis.value,
        "rule": verdict.rule,
        "rule_index": rule.index if rule else None,
        "command": verdict.command,
        "message": verdict.message,
        "approvers": list(verdict.approvers),
        "approvals": verdict.approvals,
        "timeout_seconds": verdict.timeout_seconds,
        "user": caller.name,
        "groups": sorted(caller.groups),
        "service_account": caller.service_account,
        "target": target,
        "checked": subject,
        "notes": notes,
    }
