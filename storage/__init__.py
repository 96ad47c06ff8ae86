"""Recordings and gateway state: the durable side of hoop_tui.

Where it sits: at the bottom. Everything the data path sees ends up here; it imports nothing
from `proxy`, `replay` or `hoop_tui`, never imports Textual, and never turns recorded bytes
into text.

Recordings: `schema` holds THE table of recording event types and the format version;
`encoder` turns events into file bytes (sans-IO); `writer` writes them on a thread of its
own, crash-safe, hash-chained and signed (`signing`: the recording key and the mask key);
`reader` reads a file back, seeks by time and says how far it can be trusted; `verify`
proves one; `recorder` starts and finishes a session's recording in a data directory;
`objectstore` and `spool` put recordings in S3-compatible storage through a local spool.

Masking: `masking` (the `[[masks]]` rules and the `Masker` for SQL values and terminal text)
and `mask_stream` (the same over a byte stream cut into packets) are the masking engine. It
lives here, next to the mask key in `signing`, because both the gateway and the replay of old
recordings use it. `config_file` words configuration-file errors for every layer that reads a
part of the gateway's config file.

Catalogue and search: `catalogue` lists sessions (SQLite by default), `search` is the
full-text index beside it.

State: `state` defines the `StateStore` interface and its types (holds, grants, audit, live
sessions, failed logins); `sqlite_state` implements it on one gateway (`sqlite`: how SQLite
files are opened), `pg_state` (with `pg_migrations`) for a fleet sharing PostgreSQL.
`private` makes files and directories owner-only.
"""
