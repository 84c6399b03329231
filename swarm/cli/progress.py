"""Showing a Board: a live table on a terminal, one line per phase change in a log.

Either way a node that has waited STUCK_AFTER_S or more in one phase is named with how long
(the table colours its time; the log gets a "still waiting: …" line every STUCK_AFTER_S).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from swarm.pipeline.progress import Board, NodePhase, Phase, stuck_line

STUCK_AFTER_S = 30.0
LIVE_EVERY_S = (2.0, 10.0)  # a run's progress line: on a terminal, in a log
MAX_TICKS = 1000  # the "still waiting" ticker's bound in count (its wait is STUCK_AFTER_S)
STYLE = {
    Phase.LAUNCHING: "cyan",
    Phase.RUNNING: "cyan",
    Phase.BOOTSTRAPPING: "blue",
    Phase.READY: "green",
    Phase.FAILED: "red",
}


def phase_table(rows: list[NodePhase], now: float | None = None) -> RenderableType:
    if not rows:
        return ""  # before the provider has named any node
    now = time.monotonic() if now is None else now
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("node", "phase", "in phase", "total", ""):
        table.add_column(col)
    for r in rows:
        waited = r.waited(now) if not r.phase.final else r.since - r.started
        slow = not r.phase.final and r.waited(now) >= STUCK_AFTER_S
        table.add_row(
            escape(r.label),
            f"[{STYLE[r.phase]}]{r.phase}[/]",
            f"[yellow]{waited:.0f}s[/]" if slow else f"{waited:.0f}s" if not r.phase.final else "",
            f"{r.total(r.since if r.phase.final else now):.0f}s",
            escape(r.note),
        )
    return table


@contextmanager
def shown(console: Console, stuck_after_s: float = STUCK_AFTER_S) -> Iterator[Board]:
    """A board shown on `console` while the block runs."""
    if console.is_terminal:
        with _live(console) as board:
            yield board
        return

    def changed(_: Board, row: NodePhase) -> None:
        if row.phase == Phase.LAUNCHING:
            return  # "launching N workers" said it; the provider has not named them yet
        style = STYLE[row.phase]
        console.print(f"[dim]•[/dim] [{style}]{escape(row.line())}[/]")

    board = Board(changed)
    ticker = threading.Thread(
        target=_tick, args=(console, board, stuck_after_s), daemon=True, name="still-waiting"
    )
    ticker.start()
    try:
        yield board
    finally:
        board.close()
        ticker.join(timeout=1)


def _tick(console: Console, board: Board, after_s: float) -> None:
    for _ in range(MAX_TICKS):
        if board.closed.wait(after_s):
            return
        stuck = board.stuck(after_s)
        if stuck:
            console.print(f"[yellow]![/yellow] {escape(stuck_line(stuck))}")


@contextmanager
def _live(console: Console) -> Iterator[Board]:
    board = Board()
    # rich refreshes the table (and its clocks) four times a second from its own thread
    live = Live(
        get_renderable=lambda: phase_table(board.rows()),
        console=console,
        refresh_per_second=4,
        transient=False,
    )
    with live:
        try:
            yield board
        finally:
            board.close()


@contextmanager
def live_line(console: Console) -> Iterator[Callable[[str], None]]:
    """A run's progress: on a terminal one line replaced every 2 s (gone when the block
    ends); in a log a line every 10 s."""
    every = LIVE_EVERY_S[0] if console.is_terminal else LIVE_EVERY_S[1]
    last = [float("-inf")]
    if not console.is_terminal:

        def log(text: str) -> None:
            if time.monotonic() - last[0] >= every:
                last[0] = time.monotonic()
                console.print(f"[dim]•[/dim] {escape(text)}")

        yield log
        return
    live = Live("", console=console, auto_refresh=False, transient=True)
    with live:

        def show(text: str) -> None:
            if time.monotonic() - last[0] >= every:
                last[0] = time.monotonic()
                live.update(f"[dim]•[/dim] {escape(text)}", refresh=True)

        yield show
