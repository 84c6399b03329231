"""Locust's statistics: one endpoint's figures, a run's summary, and their parsers
(Locust's stats CSV; swarm's own run.json)."""

from __future__ import annotations

import csv
import io
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
    workers_cpu: dict[str, float] = field(default_factory=dict)  # peak CPU % per worker

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
