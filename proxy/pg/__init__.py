"""The PostgreSQL side of the data path: clients (psql, drivers, agents) reach databases through
the gateway, every statement parsed by the real PostgreSQL parser, judged, held or blocked,
and recorded.

Where it sits: one of the two protocol packages of `proxy`; verdicts come from `proxy.policy`,
holds from `proxy.holds`, the recording and the live list from `proxy.session`.

A connection: `server` is the thin asyncio shell (the listener, `PgConnection`: the order of a
connection's life, the byte pumps, cancel keys); `login` logs the client in, `tls` and `scram`
serve it, `upstream` is the gateway's own login to the target; `settings` reads `[postgres]`
and the postgres targets.

After login: `session` is the sans-IO relay (`PgSession`, an explicit state machine); `frontend`
and `backend` handle the client's and the server's messages (dispatch tables), needing of the
session only what `sides` names (Protocols); `expect` is what the server owes the client;
`statements` follows prepared statements and portals; `encodings` keeps the client encoding
one the gateway reads; `wire` frames the v3 protocol (sans-IO).

Reading SQL: `analysis` makes one `StatementAnalysis` per text from one pglast parse, with
`classify` (statement classes and tables) and `lineage` (where result columns come from);
`judging` turns classes into a verdict with the policy's own fold. Results: `results` records
and masks them, `copy_out` masks COPY TO STDOUT, `binary_values` reads binary values as text
for the detectors. `timeline` is a session's statement timeline so far, shown beside a hold.
"""
