"""The PostgreSQL side of the data path: clients (psql, drivers, agents) reach databases through
the gateway, every statement parsed by the real PostgreSQL parser, judged, held or blocked,
and recorded.

`wire` frames the v3 protocol in both directions (sans-IO: bytes in, messages out, never a
socket); `classify` turns SQL into statement classes with pglast; `scram` is SCRAM-SHA-256 for
both ends of a login, without IO; `session` is the sans-IO relay of one connection after login
(judging, holds, denials, recording, response tracking); `server` is the thin asyncio shell:
listener, TLS, client and upstream logins, cancel keys, and the glue to the enforcer.
"""
