"""Turning recordings back into what the user saw (terminal screens, statement timelines).

Where it sits: between `proxy` and `storage`. It reads recordings from `storage`; bytes
recorded there become text only here. It never imports Textual, `hoop_tui` or `proxy`; the
masking engine it applies today's rules with is `storage.masking`, below it and the gateway.

`sources` opens what is replayed (a recording, or an asciicast file); `terminal` is the
terminal emulator (pyte's model, our parser); `keyframes` indexes a recording for seeking and
`player` steps, jumps and searches through it deterministically; `sql_timeline` rebuilds a
PostgreSQL session statement by statement; `masking_view` shows old recordings through
today's mask rules and `mask_review` says what was masked where; `search` feeds the full-text
index; `export` and `asciicast` write transcripts, JSON lines and asciicast v2.
"""
