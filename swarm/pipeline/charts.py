"""The figures of `swarm results --compare A B [C...] --html` and `--trend --html`: typed records
gathered from past runs, for the page cli/html.py renders. Nothing here knows HTML.

What makes runs not comparable is history.differences, the rule the baseline gate refuses by:
each run is set against the first one given.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from swarm.errors import SwarmError, UsageError
from swarm.locust.argv import HISTORY_CSV
from swarm.locust.stats import EndpointStats, HistoryPoint, parse_stats_history
from swarm.pipeline.history import RunInfo, differences, run_row

TOTAL = "Total"
TREND_LAST = 20


@dataclass(frozen=True)
class Row:
    """One stats entry of one run: the figures the comparison shows side by side."""

    name: str  # `GET /items`, `WS rtt`, or Total (Locust's Aggregated row)
    requests: int
    failures: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float


@dataclass(frozen=True)
class RunFigures:
    id: str
    started_at: str | None
    users: int | None
    rows: list[Row]  # Total first, then every stats entry in Locust's order
    history: list[HistoryPoint]  # empty when the run kept no stats history


@dataclass(frozen=True)
class Comparison:
    stack: str
    runs: list[RunFigures]
    names: list[str]  # every stats name of any run, Total first
    not_comparable: list[str]  # `RUN: users 4 vs 3`, each run against the first

    def to_json(self) -> dict[str, Any]:
        return {"kind": "compare", **asdict(self)}


@dataclass(frozen=True)
class TrendPoint:
    id: str
    started_at: str | None
    verdict: str | None
    requests: int
    failures: int
    fail_ratio: float
    rps: float
    p95_ms: float


@dataclass(frozen=True)
class Trend:
    stack: str
    runs: list[TrendPoint]  # oldest first

    def to_json(self) -> dict[str, Any]:
        return {"kind": "trend", **asdict(self)}


def _row(e: EndpointStats, name: str) -> Row:
    return Row(name, e.requests, e.failures, round(e.rps, 2), e.p50_ms, e.p95_ms, e.p99_ms)


def _figures(run: RunInfo) -> RunFigures:
    if run.summary is None:
        raise SwarmError(f"run {run.id} has no statistics to compare ({run.path})")
    s = run.summary
    rows = [_row(s.total, TOTAL)]
    rows += [_row(e, f"{e.method} {e.name}".strip()) for e in s.endpoints]
    try:
        history = parse_stats_history((run.path / HISTORY_CSV).read_text())
    except OSError:
        history = []  # fetched or older runs may have none: the side-by-side figures still stand
    rec = run.record or {}
    return RunFigures(run.id, rec.get("started_at"), rec.get("users"), rows, history)


def comparison(stack: str, runs: list[RunInfo]) -> Comparison:
    if len(runs) < 2:
        raise UsageError("--compare takes two runs or more")
    if len({r.path.resolve() for r in runs}) < len(runs):
        raise UsageError(f"--compare names one run twice ({', '.join(r.id for r in runs)})")
    figures = [_figures(r) for r in runs]
    names = list(dict.fromkeys(row.name for f in figures for row in f.rows))
    first = runs[0]
    diff = [f"{r.id}: {d}" for r in runs[1:] for d in differences(first, r)]
    return Comparison(stack, figures, names, diff)


def trend(stack: str, runs: list[RunInfo], last: int = TREND_LAST) -> Trend:
    """The stack's last runs with statistics, oldest first."""
    if last < 1:
        raise UsageError(f"--last {last}: give a count of runs, 1 or more")
    judged = [(r, r.summary.total) for r in runs if r.summary is not None][-last:]
    points = [
        TrendPoint(
            r.id,
            (r.record or {}).get("started_at"),
            run_row(r).verdict,
            t.requests,
            t.failures,
            round(t.fail_ratio, 6),
            round(t.rps, 2),
            t.p95_ms,
        )
        for r, t in judged
    ]
    if not points:
        raise UsageError(
            f"stack {stack!r} has no run with statistics yet: `swarm run --headless` saves one"
        )
    return Trend(stack, points)
