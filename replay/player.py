"""A deterministic player over a recording: the screen at any time, stepping, jumping, markers,
search, and timed playback driven by a clock the caller supplies.

Nothing here reads a clock or sleeps. `Player` moves a position (the number of events applied)
and keeps the terminal in step with it: forward by feeding events, anywhere else by restoring
the nearest keyframe at or before the target and feeding the rest. `Playback` maps the caller's
clock to a position, with a speed and asciinema's idle-time limit. `playback_schedule` gives a
terminal player (`hoop-tui play`) the output bytes with the moment each should be written.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from replay.export import ANSI_PATTERN
from replay.keyframes import (
    KEYFRAME_BYTES,
    KEYFRAME_US,
    Marker,
    Progress,
    ReplayIndex,
    apply_event,
    initial_size,
    is_screen_event,
    load_or_build,
)
from replay.sources import EventSource
from replay.terminal import Terminal
from storage.schema import Event, EventType

SPEEDS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
SHORT_JUMP_US = 5_000_000
LONG_JUMP_US = 60_000_000
# What "next command / hold / decision / mask" jump between.
COMMAND_EVENTS = frozenset({EventType.COMMAND, EventType.EXEC})
HOLD_EVENTS = frozenset({EventType.HOLD_REQUESTED})
DECISION_EVENTS = frozenset({EventType.HOLD_DECIDED, EventType.VERDICT})
MASK_EVENTS = frozenset({EventType.MASK})
MIN_SPEED, MAX_SPEED = SPEEDS[0], SPEEDS[-1]
FRAME_CACHE = 8
SECOND_US = 1_000_000


@dataclass(frozen=True, slots=True)
class SearchHit:
    """The first screen showing the text: after `position` events, at `time_us`."""

    position: int
    time_us: int


class Player:
    """The screen of one recording at a chosen point. Open with `Player.open(source)`."""

    def __init__(self, source: EventSource, index: ReplayIndex) -> None:
        self.source = source
        self.index = index
        self._frames: OrderedDict[int, list[Event]] = OrderedDict()
        self.terminal = index.keyframes[0].terminal()
        self._keyframe_positions = [k.position for k in index.keyframes]
        self._marker_positions = [m.index for m in index.markers]
        self.position = 0
        self.time_us = 0

    @classmethod
    def open(
        cls,
        source: EventSource,
        *,
        cache_dir: Path | None = None,
        every_bytes: int = KEYFRAME_BYTES,
        every_us: int = KEYFRAME_US,
        progress: Progress | None = None,
    ) -> Player:
        index = load_or_build(
            source, cache_dir, every_bytes=every_bytes, every_us=every_us, progress=progress
        )
        return cls(source, index)

    # -- facts --------------------------------------------------------------------------------

    @property
    def duration_us(self) -> int:
        return self.index.end_us

    @property
    def event_count(self) -> int:
        return self.index.event_count

    @property
    def markers(self) -> list[Marker]:
        return self.index.markers

    def lines(self) -> list[str]:
        return self.terminal.text_lines()

    def text(self) -> str:
        return self.terminal.text()

    # -- reading events -----------------------------------------------------------------------

    def _frame(self, number: int) -> list[Event]:
        frame = self._frames.get(number)
        if frame is None:
            frame = self.source.read_frame(number)
            self._frames[number] = frame
            if len(self._frames) > FRAME_CACHE:
                self._frames.popitem(last=False)
        else:
            self._frames.move_to_end(number)
        return frame

    def events(self, start: int, stop: int) -> Iterator[tuple[int, Event]]:
        """Events `start` to `stop - 1`, with their numbers."""
        starts = self.index.frame_starts
        stop = min(stop, self.event_count)
        if start >= stop:
            return
        frame_number = bisect_right(starts, start) - 1
        position = start
        while position < stop:
            frame = self._frame(frame_number)
            first = starts[frame_number]
            for event in frame[position - first : stop - first]:
                yield position, event
                position += 1
            frame_number += 1

    # -- moving -------------------------------------------------------------------------------

    def seek_position(self, position: int) -> None:
        """Show the screen after the first `position` events."""
        position = max(0, min(position, self.event_count))
        keyframes = self.index.keyframes
        nearest = keyframes[bisect_right(self._keyframe_positions, position) - 1]
        if position < self.position or nearest.position > self.position:
            self.terminal = nearest.terminal()
            self.position = nearest.position
        channel = self.index.channel
        for _, event in self.events(self.position, position):
            if is_screen_event(event, channel):
                apply_event(self.terminal, event)
        self.position = position
        self.time_us = self.index.times[position - 1] if position else 0

    def seek(self, time_us: int) -> None:
        """Show the screen at `time_us`: every event at or before it applied."""
        time_us = max(0, min(time_us, self.duration_us))
        self.seek_position(bisect_right(self.index.times, time_us))
        self.time_us = time_us

    def seek_event(self, index: int) -> None:
        """Show what event `index` is about: the screen once the first output (or resize) at
        or after it is drawn. A `mask` event comes just before the output it masked."""
        screen_events = self.index.screen_events
        found = bisect_left(screen_events, index)
        self.seek_position(screen_events[found] + 1 if found < len(screen_events) else index + 1)

    def screen_at(self, time_us: int) -> list[str]:
        self.seek(time_us)
        return self.lines()

    def jump(self, delta_us: int) -> None:
        """Move by a time (±5 s, ±1 min...) from the time shown now."""
        self.seek(self.time_us + delta_us)

    def step_forward(self) -> bool:
        """Apply up to and including the next output (or resize) event; False at the end."""
        screen_events = self.index.screen_events
        found = bisect_left(screen_events, self.position)
        if found >= len(screen_events):
            return False
        self.seek_position(screen_events[found] + 1)
        return True

    def step_back(self) -> bool:
        """Show the screen after the output event before the one shown now; False at the
        start."""
        screen_events = self.index.screen_events
        shown = bisect_left(screen_events, self.position) - 1
        if shown < 0:
            return False
        if shown == 0:
            self.seek_position(0)
        else:
            self.seek_position(screen_events[shown - 1] + 1)
        return True

    def next_marker(self, types: Iterable[EventType] | None = None) -> Marker | None:
        """Jump to the next marker (of `types`, default any) not yet applied."""
        wanted = None if types is None else frozenset(types)
        for marker in self.markers[bisect_left(self._marker_positions, self.position) :]:
            if wanted is None or marker.type in wanted:
                self.seek_position(marker.index + 1)
                return marker
        return None

    def previous_marker(self, types: Iterable[EventType] | None = None) -> Marker | None:
        """Jump to the marker before the last one applied."""
        wanted = None if types is None else frozenset(types)
        end = bisect_left(self._marker_positions, self.position - 1)
        for marker in reversed(self.markers[:end]):
            if wanted is None or marker.type in wanted:
                self.seek_position(marker.index + 1)
                return marker
        return None

    # -- search -------------------------------------------------------------------------------

    def search(self, text: str, start: int = 0) -> SearchHit | None:
        """The first point at or after `start` events at which the screen shows `text` on one
        line. Does not move the player.

        Only keyframe intervals that can hold a hit are replayed: the first one, those whose
        closing keyframe's screen shows the text, and those whose output, with control
        sequences and blanks removed, contains the text without its blanks (so colour changes
        and cursor moves inside the text do not hide it). A text drawn out of order (its end
        before its start) and gone again before the next keyframe is not found."""
        if not text:
            return None
        needle = "".join(text.split())
        keyframes = self.index.keyframes
        channel = self.index.channel
        start = max(0, min(start, self.event_count))
        first = max(0, bisect_right(self._keyframe_positions, start) - 1)
        for number in range(first, len(keyframes)):
            begin = max(start, keyframes[number].position)
            end = keyframes[number + 1].position if number + 1 < len(keyframes) else None
            stop = self.event_count if end is None else end
            closing_shows = end is not None and text in keyframes[number + 1].text
            if not (number == first or closing_shows or self._output_contains(begin, stop, needle)):
                continue
            hit = self._scan(begin, stop, text, channel)
            if hit is not None:
                return hit
        return None

    def _output_contains(self, start: int, stop: int, needle: str) -> bool:
        channel = self.index.channel
        chunks = [
            event["data"]
            for _, event in self.events(start, stop)
            if event.type is EventType.OUTPUT and event.get("channel") == channel
        ]
        raw = b"".join(chunk for chunk in chunks if isinstance(chunk, bytes))
        if needle.encode("utf-8") in raw:
            return True
        shown = ANSI_PATTERN.sub("", raw.decode("utf-8", "replace"))
        return needle in "".join(shown.split())

    def _scan(self, start: int, stop: int, text: str, channel: int | None) -> SearchHit | None:
        scratch = Player(self.source, self.index)
        scratch._frames = self._frames
        scratch.seek_position(start)
        terminal = scratch.terminal
        if start and terminal.contains(text):
            return SearchHit(start, self.index.times[start - 1])
        screen = terminal.screen
        for position, event in self.events(start, stop):
            if not is_screen_event(event, channel):
                continue
            if event.type is EventType.RESIZE:
                apply_event(terminal, event)
                if terminal.contains(text):
                    return SearchHit(position + 1, event.time_us)
                continue
            screen.dirty.clear()
            apply_event(terminal, event)
            lines = terminal.text_lines() if len(screen.dirty) > 4 else None
            for y in screen.dirty:
                if y < terminal.lines:
                    line = lines[y] if lines is not None else _line_text(terminal, y)
                    if text in line:
                        return SearchHit(position + 1, event.time_us)
        return None


def _line_text(terminal: Terminal, y: int) -> str:
    screen = terminal.screen
    line = screen.buffer.get(y)
    if not line:
        return ""
    return "".join(line[x].data if x in line else " " for x in range(screen.columns))


# -- timed playback ----------------------------------------------------------------------------


def clamp_speed(speed: float) -> float:
    return max(MIN_SPEED, min(MAX_SPEED, speed))


def compressed_times(times: Iterable[int], idle_limit_us: int | None) -> list[int]:
    """Event times with every gap longer than `idle_limit_us` cut down to it."""
    out: list[int] = []
    previous = 0
    now = 0
    for time_us in times:
        gap = time_us - previous
        if idle_limit_us is not None and gap > idle_limit_us:
            gap = idle_limit_us
        now += gap
        out.append(now)
        previous = time_us
    return out


class Playback:
    """Plays a Player in real time by a clock the caller reads: call `tick(now)` with the
    clock's value (seconds) whenever the screen should catch up."""

    def __init__(
        self, player: Player, *, speed: float = 1.0, idle_limit_s: float | None = None
    ) -> None:
        self.player = player
        self.speed = clamp_speed(speed)
        limit = None if idle_limit_s is None else max(0, round(idle_limit_s * SECOND_US))
        self.virtual = compressed_times(player.index.times, limit)
        self.paused = True
        self._anchor_now = 0.0
        self._anchor_virtual = self._virtual_at(player.position)

    def _virtual_at(self, position: int) -> float:
        return float(self.virtual[position - 1]) if position else 0.0

    def virtual_now(self, now: float) -> float:
        if self.paused:
            return self._anchor_virtual
        return self._anchor_virtual + (now - self._anchor_now) * SECOND_US * self.speed

    def play(self, now: float) -> None:
        if self.paused:
            self._anchor_now = now
            self._anchor_virtual = self._virtual_at(self.player.position)
            self.paused = False

    def pause(self, now: float) -> None:
        if not self.paused:
            self._anchor_virtual = self.virtual_now(now)
            self.paused = True

    def toggle(self, now: float) -> None:
        if self.paused:
            self.play(now)
        else:
            self.pause(now)

    def set_speed(self, speed: float, now: float) -> None:
        self._anchor_virtual = self.virtual_now(now)
        self._anchor_now = now
        self.speed = clamp_speed(speed)

    def sync(self, now: float) -> None:
        """After the player was moved by hand (seek, step), continue from where it is."""
        self._anchor_now = now
        self._anchor_virtual = self._virtual_at(self.player.position)

    def tick(self, now: float) -> bool:
        """Bring the player to the moment `now`; False once the end is reached."""
        # half a microsecond of slack: `next_due` times land on events despite float rounding
        virtual = self.virtual_now(now) + 0.5
        target = bisect_right(self.virtual, virtual)
        if target > self.player.position:
            self.player.seek_position(target)
        if target >= self.player.event_count:
            self.paused = True
            return False
        return True

    def next_due(self, now: float) -> float | None:
        """The clock value at which the next event is due (None when paused or at the end)."""
        position = self.player.position
        if self.paused or position >= len(self.virtual):
            return None
        wait_virtual = self.virtual[position] - self.virtual_now(now)
        return now + max(0.0, wait_virtual / SECOND_US / self.speed)


def playback_schedule(
    events: Iterable[Event],
    *,
    channel: int | None = None,
    speed: float = 1.0,
    idle_limit_s: float | None = None,
) -> Iterator[tuple[float, bytes]]:
    """(seconds since playback start, bytes) for each output event of `channel` (default: the
    first channel with output), with idle gaps capped and the speed applied."""
    speed = max(speed, 1e-6)
    limit = None if idle_limit_s is None else round(idle_limit_s * SECOND_US)
    previous = 0
    virtual = 0
    for event in events:
        if event.type is not EventType.OUTPUT:
            continue
        if channel is None:
            channel = event.get("channel")
        if event.get("channel") != channel:
            continue
        gap = event.time_us - previous
        if limit is not None and gap > limit:
            gap = limit
        virtual += gap
        previous = event.time_us
        data = event["data"]
        if isinstance(data, bytes) and data:
            yield virtual / SECOND_US / speed, data


def render_until(source: EventSource, time_us: int) -> Terminal:
    """The terminal at `time_us` (every event at or before it applied), reading only what
    happened up to it: frames are read in order, the one holding `time_us` is cut there, and
    no later frame is read (a recording's frame index says where they start). This is the
    screen without keyframes; `Player.seek` gives the same screen from them."""
    terminal = Terminal(*initial_size(source))
    starts: Sequence[int] | None = getattr(source, "frame_first_us", None)
    channel: int | None = None
    for number in range(source.frame_count):
        if starts is not None and number < len(starts) and starts[number] > time_us:
            break
        for event in source.read_frame(number):
            if event.time_us > time_us:
                return terminal
            if event.type is EventType.OUTPUT or event.type is EventType.RESIZE:
                if channel is None:
                    channel = event.get("channel")
                if event.get("channel") == channel:
                    apply_event(terminal, event)
    return terminal


def source_events(source: EventSource) -> Iterator[Event]:
    for number in range(source.frame_count):
        yield from source.read_frame(number)
