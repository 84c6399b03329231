"""Where each node of an `up` is: launching → running → bootstrapping → ready (or failed).

On real EC2 an `up` takes minutes (boot, cloud-init, apt, pip), and a whole-stack "waiting"
hides the one node that is stuck. The pipeline moves each node through its phases on a
`Board`; the Reporter shows the board (the CLI: a live table on a terminal, a line per
change in a log) and names a node that has waited long in one phase.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from swarm.models import Word


class Phase(Word):
    LAUNCHING = "launching"  # asked of the provider, not yet running
    RUNNING = "running"  # the provider says it runs; SSH does not answer yet
    BOOTSTRAPPING = "bootstrapping"  # SSH answered; bootstrap.sh runs
    READY = "ready"
    FAILED = "failed"

    @property
    def final(self) -> bool:
        return self in (Phase.READY, Phase.FAILED)


@dataclass(frozen=True)
class NodePhase:
    key: str  # the node's id: names are given only once the provider lists it
    label: str
    phase: Phase
    since: float  # time.monotonic() when it entered this phase
    started: float  # time.monotonic() when its launch was asked for
    note: str = ""

    def waited(self, now: float | None = None) -> float:
        """Seconds in the current phase."""
        return (time.monotonic() if now is None else now) - self.since

    def total(self, now: float | None = None) -> float:
        """Seconds since the launch was asked for."""
        return (time.monotonic() if now is None else now) - self.started

    def line(self) -> str:
        """One log line for entering this phase."""
        text = f"{self.label}: {self.phase} ({self.total(self.since):.1f}s)"
        return f"{text}: {self.note}" if self.note else text


class Board:
    """The phases of the nodes of one command; thread-safe (bootstraps run in parallel).
    `on_change(board, row)` after every move; `closed` once the command is past its waits."""

    def __init__(self, on_change: Callable[[Board, NodePhase], None] | None = None):
        self._rows: dict[str, NodePhase] = {}
        self._lock = threading.Lock()
        self._on_change = on_change
        self.closed = threading.Event()

    def move(self, key: str, phase: Phase, label: str | None = None, note: str = "") -> None:
        now = time.monotonic()
        with self._lock:
            old = self._rows.get(key)
            if old is None:
                row = NodePhase(key, label or key, phase, now, now, note)
            elif old.phase == phase and label in (None, old.label):
                return
            else:
                row = replace(old, label=label or old.label, phase=phase, since=now, note=note)
            self._rows[key] = row
        if self._on_change is not None:
            self._on_change(self, row)

    def fail(self, key: str, exc: BaseException) -> None:
        text = str(exc).strip()
        why = text.splitlines()[0] if text else type(exc).__name__
        why = why if len(why) <= 200 else why[:199] + "…"
        self.move(key, Phase.FAILED, note=why)

    def add(self, keys: Sequence[str], phase: Phase, started: float) -> None:
        """Nodes whose launch was asked for at `started` (before the provider named them)."""
        with self._lock:
            for key in keys:
                self._rows.setdefault(key, NodePhase(key, key, phase, started, started))
        for key in keys:
            if self._on_change is not None:
                self._on_change(self, self._rows[key])

    def rows(self) -> list[NodePhase]:
        with self._lock:
            return list(self._rows.values())

    def stuck(self, after_s: float, now: float | None = None) -> list[NodePhase]:
        """Nodes that have waited `after_s` or more in a phase that is not final."""
        now = time.monotonic() if now is None else now
        return [r for r in self.rows() if not r.phase.final and r.waited(now) >= after_s]

    def close(self) -> None:
        self.closed.set()


def stuck_line(rows: Sequence[NodePhase], now: float | None = None, limit: int = 5) -> str:
    """'still waiting: worker-2 bootstrapping for 1m30s, …' for the stuck rows."""
    now = time.monotonic() if now is None else now
    ordered = sorted(rows, key=lambda r: -r.waited(now))
    parts = [f"{r.label} {r.phase} for {span_text(r.waited(now))}" for r in ordered[:limit]]
    more = f" and {len(rows) - limit} more" if len(rows) > limit else ""
    return f"still waiting: {', '.join(parts)}{more}"


def span_text(seconds: float) -> str:
    """45s, 3m05s, 1h02m (negative with a sign): the one way swarm writes a span of time."""
    s = int(seconds)
    sign = "-" if s < 0 else ""
    s = abs(s)
    if s >= 3600:
        return f"{sign}{s // 3600}h{(s % 3600) // 60:02d}m"
    if s >= 60:
        return f"{sign}{s // 60}m{s % 60:02d}s"
    return f"{sign}{s}s"
