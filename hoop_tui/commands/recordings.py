"""Commands on recordings and the session catalogue: info, verify, export, import-cast,
sessions and prune."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from hoop_tui.commands.common import (
    Progress,
    add_config_arguments,
    catalogue_from,
    data_dir_from,
    gateway_id_from,
    parse_duration,
    recording_argument,
    warn_catalogue,
)
from hoop_tui.commands.replay import with_masks
from hoop_tui.errors import CommandError
from replay.asciicast import (
    CastError,
    export_cast,
    header_for_cast,
    read_cast,
    write_cast_recording,
)
from replay.export import export_jsonl, export_text
from replay.keyframes import cache_keyframes
from storage.catalogue import SessionQuery, SessionRow, SqliteCatalogue
from storage.objectstore import StoreSettings, as_location, is_url, settings_for
from storage.reader import RecordingError, RecordingReader, format_time
from storage.recorder import RECORDINGS_DIR, SUFFIX, recording_path
from storage.search import SearchIndex
from storage.signing import (
    PUBLIC_KEY_NAME,
    SigningKeyError,
    load_or_create_signing_key,
    load_public_key,
)
from storage.verify import (
    VerifyReport,
    abrupt_end,
    binding_problems,
    recording_problem,
    verify_recording,
    writer_alive,
)


def parse_when(text: str) -> int:
    """A point in time, as microseconds since the epoch: an ISO date or time (UTC unless it
    says otherwise), or a duration meaning that long ago ('2h', '7d')."""
    try:
        return int((time.time() - parse_duration(text)) * 1_000_000)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither a duration (7d) nor an ISO date/time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1_000_000)


def format_epoch_us(value: int | None) -> str:
    if value is None:
        return "-"
    return datetime.fromtimestamp(value / 1_000_000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


@contextmanager
def open_recording(path: str) -> Iterator[RecordingReader]:
    try:
        reader = RecordingReader.open(path)
    except FileNotFoundError:
        raise CommandError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CommandError(f"{path}: is a directory, not a recording") from None
    except OSError as exc:
        raise CommandError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except RecordingError as exc:
        raise CommandError(f"{path}: {exc}") from None
    with reader:
        yield reader


@contextmanager
def output_stream(path: str | None) -> Iterator[IO[str]]:
    if path is None or path == "-":
        yield sys.stdout
        return
    try:
        handle = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise CommandError(f"{path}: cannot write: {exc.strerror}") from None
    with handle:
        yield handle


# -- info -----------------------------------------------------------------------------------------


def cmd_info(args: argparse.Namespace) -> int:
    with open_recording(recording_argument(args.file, args)) as reader:
        info = recording_info(reader)
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    header = info["header"]
    print(f"file:       {args.file}")
    print(f"session:    {header['session_id']}")
    who = header["user"] + (" (service account)" if header["service_account"] else "")
    extra = header.get("extra") or {}
    if extra.get("caller_kind") == "agent":  # an OIDC agent (docs/identity.md)
        who += f" (agent of {extra.get('owner', '?')}, client {extra.get('client_id', '?')})"
    print(f"user:       {who}")
    print(f"target:     {header['target']} ({header['protocol']})")
    print(f"client:     {header['client'] or '-'}")
    print(f"started:    {format_epoch_us(header['started_at_us'])} UTC")
    print(f"duration:   {format_time(info['duration_us'])}")
    if header["term"]:
        print(f"terminal:   {header['term']} {header['cols']}x{header['rows']}")
    print(f"gateway:    {header['gateway_id'] or '-'}")
    print(f"size:       {info['size']} bytes in {info['frames']} frames")
    print(f"events:     {info['events']}")
    for name, count in sorted(info["counts"].items()):
        print(f"  {name:<16}{count}")
    print(f"status:     {info['status']}")
    return 0


def recording_info(reader: RecordingReader) -> dict[str, Any]:
    if reader.complete and reader.trailer is not None:
        counts = dict(reader.trailer.get("counts", {}))
        status = f"complete, ended: {reader.trailer.get('end_reason')}"
    else:
        tally: Counter[str] = Counter(event.name for event in reader.events())
        counts = dict(tally)
        status = reader.describe_problem() or (
            "incomplete: no trailer (the writer stopped before the session ended)"
        )
    return {
        "header": reader.header.to_map(),
        "size": reader.size,
        "frames": reader.frame_count,
        "events": sum(counts.values()),
        "counts": counts,
        "duration_us": reader.last_us,
        "complete": reader.complete,
        "status": status,
    }


# -- verify ---------------------------------------------------------------------------------------


def cmd_verify(args: argparse.Namespace) -> int:
    """Each file's chain and signatures, then its header against its place in the data
    directory and its catalogue row; with --all, every recording and every row."""
    data_dir: Path | None
    try:
        data_dir = data_dir_from(args)
    except CommandError:
        if not args.key or args.all:
            raise
        data_dir = None  # a file and a key, no gateway: the chain and signatures only
    key_path = Path(args.key) if args.key else data_dir_from(args) / PUBLIC_KEY_NAME
    try:
        public_key = load_public_key(key_path)
    except SigningKeyError as exc:
        raise CommandError(f"{exc} (give the gateway's public key with --key FILE)") from None
    if not args.files and not args.all:
        raise CommandError("name the recordings to verify, or --all for the whole data directory")
    catalogue = _catalogue_of(data_dir, args)
    failures = 0
    rows: dict[str, SessionRow] = {}
    if args.all and catalogue is not None:
        rows = {row.id: row for row in catalogue.find_sessions(SessionQuery())}
        local = getattr(catalogue, "local", catalogue)  # the fleet's: this instance's own
        own = {row.id for row in local.find_sessions(SessionQuery())} if local else set()
        # another instance's row is this one's to hold only when its recording is in the store
        rows = {key: row for key, row in rows.items() if key in own or is_url(row.path)}
    seen: set[str] = set()
    live = stopped = 0
    store = store_settings(args) if data_dir is not None else None
    spool = store.spool_in(data_dir) if store is not None and data_dir is not None else None
    # each file with the session id it was asked for by (None when named by its path)
    names: list[tuple[str, str | None]] = []
    for text in args.files:
        found = recording_argument(text, args)
        names.append((found, text if found != text else None))
    if args.all:
        assert data_dir is not None
        found_paths = sorted((data_dir / RECORDINGS_DIR).rglob(f"*{SUFFIX}"))
        names += [(str(path), None) for path in found_paths]
        store = store_settings(args)
        if store is not None:
            from storage.objectstore import list_recordings

            try:
                names += [(url, None) for url in list_recordings(store)]
            except OSError as exc:
                raise CommandError(f"cannot list the recordings in {store.url}: {exc}") from None
    for name, asked in names:
        path: Path | str = name if is_url(name) else Path(name)
        progress = Progress(f"verifying {name}")
        report = verify_recording(path, public_key, progress.update)
        progress.finish()
        if report.header is not None:
            seen.add(report.header.session_id)
            _bind(report, path, data_dir, catalogue, asked, spool)
        print(report.summary())
        live += report.still_writing
        stopped += report.ended_without_close is not None
        failures += not report.ok and not report.still_writing and not (
            report.ended_without_close is not None
        )
    for row in rows.values():
        if row.id in seen:
            continue
        problem = recording_problem(row) or "not at its place in the data directory"
        print(
            f"{row.path}: FAILED, the catalogue's session {row.id} (user {row.user}, target "
            f"{row.target}) has no recording there: {problem}"
        )
        failures += 1
    if args.all:
        writing = f", {live} still being written" if live else ""
        writing += f", {stopped} ended without a close" if stopped else ""
        print(
            f"{len(names)} recording(s){writing}, {len(rows)} catalogue row(s), "
            f"{failures} problem(s)"
        )
    return 1 if failures else 0


def store_settings(args: argparse.Namespace) -> StoreSettings | None:
    """The gateway's `[recordings]` object store, when its configuration names one."""
    from proxy.config import ConfigError, load_config, resolve_config_path

    if getattr(args, "data_dir", None):
        candidate = Path(args.data_dir) / "gateway.toml"
        if not candidate.is_file():
            return None
    else:
        candidate = resolve_config_path(getattr(args, "config", None))
    try:
        return load_config(candidate).recordings
    except ConfigError:
        return None


def _catalogue_of(data_dir: Path | None, args: argparse.Namespace) -> Any:
    """The catalogue to hold recordings against: the fleet's with [state] (every instance's
    rows), else the data directory's; None without a data directory or catalogue."""
    if data_dir is None:
        return None
    catalogue = catalogue_from(args, existing=True)
    if catalogue is not None:
        catalogue.find_sessions(SessionQuery(limit=1))  # learn now if the database answers
        warn_catalogue(catalogue)
    return catalogue


def _bind(
    report: VerifyReport,
    path: Path | str,
    data_dir: Path | None,
    catalogue: Any,
    asked: str | None = None,
    spool: Path | None = None,
) -> None:
    """Hold the file's place and catalogue row against its header: a file inside the data
    directory's recordings must sit where its session belongs and have a matching row; one
    outside (an exported copy) is checked against the row only if the catalogue has one. A
    file found by a session id must hold that session (a row can be edited to point at
    another's). A file cut short is still being written when a live writer holds it, or
    ended without a close when its row records the gateway stopping; otherwise it FAILED."""
    assert report.header is not None
    expected: Path | str | None = None
    location = as_location(path)
    if is_url(location):
        store = settings_for(location)
        if store.holds(location):  # the gateway's store files it by session and day
            expected = store.location_of(report.header.session_id, report.header.started_at_us)
    elif data_dir is not None and _inside(Path(location), data_dir / RECORDINGS_DIR):
        expected = recording_path(data_dir, report.header)
    row = catalogue.get_session(report.header.session_id) if catalogue is not None else None
    problems = binding_problems(report.header, path, row, expected)
    if asked is not None and not report.header.session_id.startswith(asked):
        problems.insert(
            0, f"you asked for session {asked}, whose catalogue row points at this file"
        )
    report.bind(problems)
    if not report.unfinished or report.binding:
        return
    session_id = report.header.session_id
    if (row is None or row.ended_at_us is None) and _writer_alive(
        location, session_id, catalogue, spool
    ):
        report.live()
    elif row is not None and abrupt_end(row):
        report.stopped(row.end_reason or "")


def _writer_alive(location: str, session_id: str, catalogue: Any, spool: Path | None) -> bool:
    """Evidence that a gateway writes this recording now, not the row's word: the flock its
    writer holds on the local file, or on the spool's copy of a stored one; else the fleet's
    live registry with that instance's heartbeat fresh."""
    if not is_url(location):
        return writer_alive(location)
    if spool is not None and writer_alive(spool / f"{session_id}{SUFFIX}"):
        return True
    alive = getattr(catalogue, "writer_alive", None)
    return bool(alive is not None and alive(session_id))


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except (ValueError, OSError):
        return False
    return True


# -- export / import ------------------------------------------------------------------------------

# Each takes a recording (or its masked view) and a text stream; returns the events written.
EXPORTERS: dict[str, Callable[[Any, IO[str]], int]] = {
    "asciicast": export_cast,
    "text": export_text,
    "jsonl": export_jsonl,
}


def cmd_export(args: argparse.Namespace) -> int:
    with open_recording(recording_argument(args.file, args)) as reader:
        source = with_masks(reader, args.masks)  # before the output file is created
        with output_stream(args.output) as out:
            EXPORTERS[args.format](source, out)
        problem = reader.describe_problem()
    if problem:
        print(f"hoop-tui: warning: {args.file}: {problem}", file=sys.stderr)
    return 0


def cmd_import_cast(args: argparse.Namespace) -> int:
    source = Path(args.file)
    try:
        cast = read_cast(source)
    except CastError as exc:
        raise CommandError(str(exc)) from None
    data_dir = data_dir_from(args)
    signer = load_or_create_signing_key(data_dir)
    header = header_for_cast(cast, signer, gateway_id=gateway_id_from(args), source=source)
    out_path = Path(args.output) if args.output else recording_path(data_dir, header)
    try:
        summary = write_cast_recording(cast, header, out_path, signer)
    except FileExistsError:
        raise CommandError(f"{out_path}: already exists; choose another -o") from None
    except OSError as exc:
        raise CommandError(f"{out_path}: cannot write: {exc.strerror}") from None
    if not args.output:
        catalogue = SqliteCatalogue.in_data_dir(data_dir)
        catalogue.add_session(header, out_path)
        catalogue.finish_session(summary)
    cache_keyframes(out_path)  # the first replay of it restores a keyframe, like any other
    print(f"imported {len(cast.events)} events into {out_path}")
    return 0


# -- sessions / prune -----------------------------------------------------------------------------


def cmd_sessions(args: argparse.Namespace) -> int:
    try:
        query = SessionQuery(
            user=args.user,
            target=args.target,
            protocol=args.protocol,
            since_us=parse_when(args.since) if args.since else None,
            until_us=parse_when(args.until) if args.until else None,
            limit=args.limit,
        )
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    catalogue = catalogue_from(args)
    rows = catalogue.find_sessions(query)
    warn_catalogue(catalogue)
    if args.json:
        listed = [{**row.to_json(), "recording_problem": recording_problem(row)} for row in rows]
        print(json.dumps(listed, indent=2))
        return 0
    if not rows:
        print("no sessions match", file=sys.stderr)
        return 0
    print(
        f"{'SESSION':<10} {'STARTED (UTC)':<19} {'USER':<12} {'TARGET':<14} {'PROTO':<9} "
        f"{'EVENTS':>7} {'DENY':>4} {'HOLD':>4}  {'END':<16} FILE"
    )
    for row in rows:
        problem = recording_problem(row)
        print(
            f"{row.id[:8]:<10} {format_epoch_us(row.started_at_us):<19} {row.user[:12]:<12} "
            f"{row.target[:14]:<14} {row.protocol[:9]:<9} {row.events:>7} {row.denies:>4} "
            f"{row.holds:>4}  {(row.end_reason or 'live')[:16]:<16} {_shown_path(row.path)}"
            + (f"  RECORDING {problem}" if problem else "")
        )
    return 0


def _shown_path(path: str) -> str:
    """A recording's path relative to here when it lies below, so the line stays short."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def cmd_prune(args: argparse.Namespace) -> int:
    try:
        age_s = parse_duration(args.older_than)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    cutoff_us = int((time.time() - age_s) * 1_000_000)
    data_dir = data_dir_from(args)
    catalogue = SqliteCatalogue.in_data_dir(data_dir)
    index = SearchIndex.in_data_dir(data_dir)
    old = [
        row
        for row in catalogue.find_sessions(SessionQuery(until_us=cutoff_us))
        if row.ended_at_us is not None and row.ended_at_us < cutoff_us
    ]
    freed = 0
    for row in old:
        path = Path(row.path)
        if args.dry_run:
            print(f"would remove {row.id} ({format_epoch_us(row.started_at_us)}) {row.path}")
            continue
        if is_url(as_location(row.path)):
            from storage.objectstore import delete_recording

            try:
                freed += delete_recording(as_location(row.path))
            except OSError as exc:
                raise CommandError(
                    f"{row.path}: cannot remove: {exc}; nothing else removed"
                ) from None
            catalogue.remove_session(row.id)
            index.forget(row.id)
            continue
        try:
            freed += path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise CommandError(
                f"{path}: cannot remove: {exc.strerror}; nothing else removed"
            ) from None
        catalogue.remove_session(row.id)
        index.forget(row.id)  # what was pruned is not found again
    verb = "would remove" if args.dry_run else "removed"
    print(f"{verb} {len(old)} session(s) older than {args.older_than}, {freed} bytes freed")
    return 0


# -- push: local recordings into object storage ---------------------------------------------------


def cmd_push(args: argparse.Namespace) -> int:
    """Move finished recordings from the data directory to the `[recordings]` store: upload,
    read the size back from the store, point the catalogue row at the URL, delete the file."""
    store = store_settings(args)
    if store is None:
        raise CommandError('the configuration has no [recordings] url = "s3://..." to push to')
    from storage.spool import push_file
    from storage.verify import read_header

    data_dir = data_dir_from(args)
    catalogue = SqliteCatalogue.in_data_dir(data_dir)
    rows = [
        row
        for row in catalogue.find_sessions(SessionQuery())
        if not is_url(as_location(row.path)) and row.ended_at_us is not None
    ]
    from proxy.fleet.catalogue import FleetCatalogue

    fleet = catalogue_from(args)  # with [state]: the shared row is pointed at the URL too
    shared = fleet if isinstance(fleet, FleetCatalogue) else None
    moved, failed, size = 0, 0, 0
    for row in sorted(rows, key=lambda r: r.started_at_us):
        url = store.location_of(row.id, row.started_at_us)
        if args.dry_run:
            print(f"would push {row.id} {row.path} -> {url}")
            continue
        path = Path(row.path)
        try:
            if read_header(path).session_id != row.id:
                raise RecordingError(0, "its header names another session (verify it)")
            pushed = push_file(store, path, url, row.id)
            with RecordingReader.open(url) as stored:
                if stored.size != path.stat().st_size:
                    raise OSError(f"the store holds {stored.size} bytes, the file more")
        except (OSError, RecordingError) as exc:
            print(f"{row.id}: not pushed: {exc}", file=sys.stderr)
            failed += 1
            continue
        catalogue.move_session(row.id, url)
        if shared is not None and not shared.move_session(row.id, url):  # the fleet's row too
            print(f"hoop-tui: warning: {row.id}: {shared.problem}", file=sys.stderr)
        if not args.keep:
            path.unlink()
        moved += 1
        size += pushed
        print(f"pushed {row.id} -> {url}")
    if not args.dry_run:
        print(f"pushed {moved} recording(s), {size} bytes, to {store.url}; {failed} failed")
    return 1 if failed else 0


# -- registration ---------------------------------------------------------------------------------


FILE_HELP = "a recording (.hrec), or a session id as `sessions` shows it"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    info = subparsers.add_parser("info", help="show a recording's header, size and contents")
    info.add_argument("file", help=FILE_HELP)
    info.add_argument("--json", action="store_true", help="print JSON")
    add_config_arguments(info)
    info.set_defaults(handler=cmd_info)

    verify = subparsers.add_parser(
        "verify",
        help="check recordings' hash chains and signatures",
        description="Exit 0 only when every file is complete, unaltered and signed by the "
        "gateway's key, and its header's session, user and target match its place in the data "
        "directory and its catalogue row; otherwise name the first bad offset and the last "
        "good time, or what does not match.",
    )
    verify.add_argument("files", nargs="*", metavar="FILE", help=FILE_HELP)
    verify.add_argument(
        "--all",
        action="store_true",
        help="every recording in the data directory and every catalogue row, each against "
        "the other",
    )
    verify.add_argument("--key", metavar="FILE", help="the gateway's recording public key")
    add_config_arguments(verify)
    verify.set_defaults(handler=cmd_verify)

    export = subparsers.add_parser(
        "export", help="write a recording as asciicast, text or JSON lines"
    )
    export.add_argument("file", help=FILE_HELP)
    export.add_argument("--format", choices=sorted(EXPORTERS), default="text")
    export.add_argument("-o", "--output", metavar="OUT", help="output file (default: stdout)")
    export.add_argument(
        "--masks",
        metavar="CONFIG",
        help="apply the [[masks]] of this gateway configuration (all of them) before writing",
    )
    add_config_arguments(export)
    export.set_defaults(handler=cmd_export)

    importer = subparsers.add_parser(
        "import-cast",
        help="turn an asciicast v2 file into a signed recording",
        description="Without -o the recording goes into the data directory and its catalogue.",
    )
    importer.add_argument("file", metavar="FILE.cast")
    importer.add_argument("-o", "--output", metavar="OUT")
    add_config_arguments(importer)
    importer.set_defaults(handler=cmd_import_cast)

    sessions = subparsers.add_parser("sessions", help="list catalogued sessions")
    sessions.add_argument("--user")
    sessions.add_argument("--target")
    sessions.add_argument("--protocol")
    sessions.add_argument("--since", help="ISO date/time, or a duration ago (7d)")
    sessions.add_argument("--until", help="ISO date/time, or a duration ago")
    sessions.add_argument("--limit", type=int)
    sessions.add_argument("--json", action="store_true")
    add_config_arguments(sessions)
    sessions.set_defaults(handler=cmd_sessions)

    push = subparsers.add_parser(
        "push-recordings",
        help="move finished recordings from the data directory to the [recordings] object store",
        description="Each finished session's file is uploaded, checked in the store, its "
        "catalogue row pointed at the store, and the file deleted (kept with --keep). A "
        "recording that fails stays where it was; run it again to retry.",
    )
    push.add_argument("--dry-run", action="store_true", help="list what would move")
    push.add_argument("--keep", action="store_true", help="keep the local files")
    add_config_arguments(push)
    push.set_defaults(handler=cmd_push)

    prune = subparsers.add_parser("prune", help="delete old recordings and their catalogue rows")
    prune.add_argument("--older-than", required=True, metavar="AGE", help="for example 90d")
    prune.add_argument("--dry-run", action="store_true", help="list what would go")
    add_config_arguments(prune)
    prune.set_defaults(handler=cmd_prune)
