"""Recordings and gateway state: the durable side of hoop_tui.

Everything the data path sees ends up here. `schema` holds THE table of recording event types
and the format version; `writer` turns events into a crash-safe, hash-chained, signed file of
independent zstd frames on a thread of its own; `reader` reads such a file back, seeks by time
and says how far it can be trusted; `catalogue` lists sessions (SQLite by default).

This package never imports Textual, and never turns recorded bytes into text.
"""
