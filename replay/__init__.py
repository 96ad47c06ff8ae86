"""Turning recordings back into what the user saw (terminal screens, statement timelines).

Bytes recorded by `storage` become text only here. This package never imports Textual.
"""
