"""The Textual workstation (`hoop-tui tui`, and the remote console over SSH).

Where it sits: the only package that imports Textual. `app` is the App: it holds the
connection to the gateway's control socket (`proxy.holds.control`) and answers the Messages
its screens post; the screens only draw and ask. `queue` is the approval queue, `live` the
live sessions (and watching one), `recordings` the recordings browser, `replay` a terminal
recording frame by frame, `sql_timeline` a PostgreSQL session statement by statement,
`mask_review` what was masked, `search` hits across recordings, `keys` the help panel,
`alerts` the bell and desktop notifications for new holds.
"""
