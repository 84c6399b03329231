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
from swarm.models import Word

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
# how an actual value is shown: "actual 11 ms", "actual 100 %", "actual 106.1 rps"
SHOWN_UNIT = {"fail_ratio": "%", "rps": "rps", "cpu": "%"}
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

    @property
    def actual_shown(self) -> str:
        return shown(self.metric, self.actual)


def shown(metric: str, value: float | None) -> str:
    """A measured value with its unit, as a person reads it (fail_ratio as a percent)."""
    if value is None:
        return "-"
    if metric == "fail_ratio":
        return f"{value * 100:.3g} %"
    return f"{round(value, 1):g} {SHOWN_UNIT.get(metric, 'ms')}"


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


def metric_of(recorded: dict[str, Any]) -> str:
    """The metric of a check read back from run.json (older records kept only its text)."""
    if recorded.get("metric"):
        return str(recorded["metric"])
    m = EXPR_RE.match(str(recorded.get("check", "")))
    return m.group(1) if m else ""


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


class Verdict(Word):
    """The one word CI reads from run.json."""

    PASS = "pass"  # Locust exited 0 and every check held
    FAIL = "fail"  # a check failed, or Locust counted failures (its exit 1)
    ERROR = "error"  # the run itself went wrong: no exit code, no statistics, a lost master
    INTERRUPTED = "interrupted"  # Ctrl-C


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    exit_code: int  # swarm's own
    why: str  # for a FAIL: what failed, in one clause

    @classmethod
    def interrupted(cls) -> Judgement:
        return cls(Verdict.INTERRUPTED, 130, "interrupted (Ctrl-C)")

    @classmethod
    def of(
        cls,
        locust_exit: int,
        checks: list[CheckResult],
        broken: bool,
        failures: int = 0,
        raised: int = 0,
    ) -> Judgement:
        """`failures`: requests Locust counted as failed; `raised`: exceptions of the tasks."""
        failed = [c.check for c in checks if not c.ok]
        if broken:
            return cls(Verdict.ERROR, 1, "the run did not complete")
        parts = []
        if failed:
            parts.append(f"{len(failed)} check(s) failed: {', '.join(failed)}")
        if locust_exit:
            why = [f"{failures} request(s) failed"] if failures else []
            why += [f"tasks raised {raised} exception(s)"] if raised else []
            parts.append(
                f"Locust exited {locust_exit}"
                + (f" ({' and '.join(why)}, listed above)" if why else "")
            )
        if not parts:
            return cls(Verdict.PASS, 0, "")
        return cls(Verdict.FAIL, 1 if failed else locust_exit, "; ".join(parts))


def saturated(cpu_peaks: dict[str, float]) -> dict[str, float]:
    """Nodes whose peak CPU says the swarm itself may have been the bottleneck."""
    return {k: round(v, 1) for k, v in cpu_peaks.items() if v > SATURATED_CPU}
