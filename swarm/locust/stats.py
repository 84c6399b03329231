"""Locust's statistics: one endpoint's figures, a run's summary, its failures and
exceptions, and their parsers (Locust's CSV files; swarm's own run.json)."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class EndpointStats:
    method: str
    name: str
    requests: int
    failures: int
    rps: float
    avg_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    @property
    def fail_ratio(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class Summary:
    endpoints: list[EndpointStats]
    total: EndpointStats
    # peak CPU % per node, the master's too (the name is run.json's since it had only workers)
    workers_cpu: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        def row(e: EndpointStats) -> dict[str, Any]:
            return {
                "method": e.method,
                "name": e.name,
                "requests": e.requests,
                "failures": e.failures,
                "rps": round(e.rps, 2),
                "avg_ms": e.avg_ms,
                "p50_ms": e.p50_ms,
                "p95_ms": e.p95_ms,
                "p99_ms": e.p99_ms,
                "max_ms": e.max_ms,
                "fail_ratio": round(e.fail_ratio, 6),
            }

        return {
            "total": row(self.total),
            "endpoints": [row(e) for e in self.endpoints],
            "workers_cpu": dict(self.workers_cpu),
        }


def _f(value: str | None) -> float:
    try:
        return float(value or "")
    except ValueError:
        return 0.0  # Locust writes "N/A" for percentiles of an endpoint with no requests


def parse_stats_csv(text: str) -> Summary:
    """Locust's <prefix>_stats.csv -> Summary (the 'Aggregated' row is the total)."""
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows or "Request Count" not in rows[0]:
        raise ValueError("not a Locust stats CSV")
    parsed = []
    for r in rows:
        parsed.append(
            EndpointStats(
                method=r.get("Type") or "",
                name=r.get("Name") or "",
                requests=int(_f(r["Request Count"])),
                failures=int(_f(r["Failure Count"])),
                rps=_f(r.get("Requests/s")),
                avg_ms=_f(r.get("Average Response Time")),
                p50_ms=_f(r.get("50%")),
                p95_ms=_f(r.get("95%")),
                p99_ms=_f(r.get("99%")),
                max_ms=_f(r.get("Max Response Time")),
            )
        )
    total = next((p for p in parsed if p.name == "Aggregated"), None)
    endpoints = [p for p in parsed if p.name != "Aggregated"]
    if total is None:
        total = EndpointStats(
            "",
            "Aggregated",
            sum(e.requests for e in endpoints),
            sum(e.failures for e in endpoints),
            sum(e.rps for e in endpoints),
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
        )
    return Summary(endpoints, total)


def summary_from_json(d: dict[str, Any]) -> Summary:
    """The `summary` of a run.json (Summary.to_json's shape) -> Summary."""

    def ep(e: dict[str, Any]) -> EndpointStats:
        return EndpointStats(
            e.get("method", ""),
            e.get("name", ""),
            int(e.get("requests", 0)),
            int(e.get("failures", 0)),
            *(
                float(e.get(k) or 0)
                for k in ("rps", "avg_ms", "p50_ms", "p95_ms", "p99_ms", "max_ms")
            ),
        )

    return Summary(
        [ep(e) for e in d.get("endpoints", [])], ep(d["total"]), dict(d.get("workers_cpu") or {})
    )


@dataclass(frozen=True)
class Failure:
    """One row of Locust's <prefix>_failures.csv: a request that failed, by error."""

    method: str
    name: str
    error: str
    occurrences: int


@dataclass(frozen=True)
class Raised:
    """One row of Locust's <prefix>_exceptions.csv: an exception a task raised."""

    count: int
    message: str
    where: str  # the innermost frame: "file.py:12 in task"
    nodes: str


_FRAME_RE = re.compile(r'File "([^"]+)", line (\d+), in (\S+)')


def parse_failures_csv(text: str) -> list[Failure]:
    """Most frequent first; an empty or foreign file is no failures."""
    rows = [r for r in csv.DictReader(io.StringIO(text)) if r.get("Occurrences")]
    out = [
        Failure(
            r.get("Method") or "",
            r.get("Name") or "",
            r.get("Error") or "",
            int(_f(r["Occurrences"])),
        )
        for r in rows
    ]
    return sorted(out, key=lambda f: -f.occurrences)


def parse_exceptions_csv(text: str) -> list[Raised]:
    out = []
    for r in csv.DictReader(io.StringIO(text)):
        if not r.get("Count"):
            continue
        frames = _FRAME_RE.findall(r.get("Traceback") or "")
        where = ""
        if frames:
            path, line, func = frames[-1]
            where = f"{path.rsplit('/', 1)[-1]}:{line} in {func}"
        out.append(
            Raised(
                int(_f(r["Count"])),
                " ".join((r.get("Message") or "").split()),
                where,
                r.get("Nodes") or "",
            )
        )
    return sorted(out, key=lambda e: -e.count)


@dataclass(frozen=True)
class HistoryPoint:
    """One row of Locust's <prefix>_stats_history.csv: the run's state at one second."""

    t: float  # seconds since the first row
    users: int
    rps: float
    failures_per_s: float
    p50_ms: float | None  # None before the first response ("N/A")
    p95_ms: float | None


def parse_stats_history(text: str, name: str = "Aggregated") -> list[HistoryPoint]:
    """Locust's <prefix>_stats_history.csv -> the rows of one stats name, oldest first."""

    def opt(v: str | None) -> float | None:
        try:
            return float(v or "")
        except ValueError:
            return None

    rows = [r for r in csv.DictReader(io.StringIO(text)) if r.get("Name") == name]
    if not rows:
        return []
    t0 = _f(rows[0].get("Timestamp"))
    return [
        HistoryPoint(
            _f(r.get("Timestamp")) - t0,
            int(_f(r.get("User Count"))),
            _f(r.get("Requests/s")),
            _f(r.get("Failures/s")),
            opt(r.get("50%")),
            opt(r.get("95%")),
        )
        for r in rows
    ]
