"""Judge a run: --check expressions ('p95<200ms', 'fail_ratio<1%', 'rps>50', 'cpu<90%') and
their verdicts, and which nodes ran too hot for the figures to be trusted."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from swarm.config.schema import ChecksSection
from swarm.errors import UsageError
from swarm.locust.stats import Summary

SATURATED_CPU = 90.0  # Locust warns above this; so do we

OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
# metric -> (allowed units, unit used internally)
METRICS = {
    "p50": ("ms", "s"),
    "p95": ("ms", "s"),
    "p99": ("ms", "s"),
    "avg": ("ms", "s"),
    "fail_ratio": ("%", ""),
    "rps": ("",),
    "cpu": ("%", ""),
}
EXPR_RE = re.compile(r"^\s*([a-z_0-9]+)\s*(<=|>=|<|>)\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|%)?\s*$")


@dataclass(frozen=True)
class CheckResult:
    check: str  # as the user wrote it
    metric: str
    op: str
    threshold: float
    actual: float
    ok: bool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Check:
    metric: str
    op: str
    value: float  # ms for times, a fraction for fail_ratio, percent for cpu
    text: str

    def measure(self, summary: Summary) -> float:
        t = summary.total
        if self.metric == "cpu":
            return max(summary.workers_cpu.values(), default=0.0)
        return {
            "p50": t.p50_ms,
            "p95": t.p95_ms,
            "p99": t.p99_ms,
            "avg": t.avg_ms,
            "fail_ratio": t.fail_ratio,
            "rps": t.rps,
        }[self.metric]

    def evaluate(self, summary: Summary) -> CheckResult:
        actual = self.measure(summary)
        return CheckResult(
            self.text,
            self.metric,
            self.op,
            self.value,
            round(actual, 6),
            bool(OPS[self.op](actual, self.value)),
        )


def parse_check(text: str) -> Check:
    m = EXPR_RE.match(text)
    if not m:
        raise UsageError(
            f"bad --check {text!r}: write METRIC OP VALUE, e.g. 'p95<200ms', "
            "'fail_ratio<1%', 'rps>50', 'cpu<90%'"
        )
    metric, op, num, unit = m.group(1), m.group(2), float(m.group(3)), m.group(4) or ""
    if metric not in METRICS:
        raise UsageError(
            f"bad --check {text!r}: unknown metric {metric!r} (use one of {', '.join(METRICS)})"
        )
    if unit not in METRICS[metric]:
        allowed = " or ".join(repr(u) if u else "no unit" for u in METRICS[metric])
        raise UsageError(f"bad --check {text!r}: {metric} takes {allowed}")
    if unit == "s":
        num *= 1000.0
    if metric == "fail_ratio":
        num = num / 100.0 if unit == "%" else num
        if num > 1:
            raise UsageError(
                f"bad --check {text!r}: fail_ratio is a fraction (0.01) or a percent (1%)"
            )
    return Check(metric, op, num, text.strip())


def checks_from_table(table: ChecksSection) -> list[Check]:
    """The [checks] section of swarm.toml as Check objects."""
    out = []
    for key, metric, op in (
        ("p95_ms", "p95", "<"),
        ("p99_ms", "p99", "<"),
        ("avg_ms", "avg", "<"),
        ("fail_ratio", "fail_ratio", "<="),
        ("min_rps", "rps", ">="),
    ):
        value = getattr(table, key)
        if value is not None:
            out.append(
                Check(
                    metric,
                    op,
                    float(value),
                    f"{metric}{op}{value:g}" + ("ms" if key.endswith("_ms") else ""),
                )
            )
    return out


def saturated(cpu_peaks: dict[str, float]) -> dict[str, float]:
    """Nodes whose peak CPU says the swarm itself may have been the bottleneck."""
    return {k: round(v, 1) for k, v in cpu_peaks.items() if v > SATURATED_CPU}
