"""Judge a run: --check expressions and their verdicts, and which nodes ran too hot for the
figures to be trusted.

A check is METRIC[NAME] OP VALUE: `p95<200ms`, `p95[WS rtt]<200ms`, `p99[GET /api/items]<1s`,
`fail_ratio<1%`, `success>99%`, `rps>50`, `cpu<90%`. Without [NAME] it reads the Aggregated
row. A signed percent makes it relative to a baseline run: `p95<+10%`, `rps[WS rtt]>-5%`.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from swarm.config.schema import ChecksSection
from swarm.errors import UsageError
from swarm.locust.stats import EndpointStats, Summary
from swarm.models import Word

SATURATED_CPU = 90.0  # Locust warns above this; so do we

OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
# what a failed comparison held instead: "+129% >= +10%"
NOT = {"<": ">=", "<=": ">", ">": "<=", ">=": "<"}
# metric -> (allowed units, unit used internally)
METRICS = {
    "p50": ("ms", "s"),
    "p95": ("ms", "s"),
    "p99": ("ms", "s"),
    "avg": ("ms", "s"),
    "max": ("ms", "s"),
    "fail_ratio": ("%", ""),
    "success": ("%", ""),  # 1 - fail_ratio
    "rps": ("",),
    "cpu": ("%", ""),
}
RATIOS = ("fail_ratio", "success")  # fractions inside, percents to people
# how an actual value is shown: "actual 11 ms", "actual 100 %", "actual 106.1 rps"
SHOWN_UNIT = {"fail_ratio": "%", "success": "%", "rps": "rps", "cpu": "%"}
# [NAME]: greedy up to the last "]" before the operator, so a name may hold "[" or "<"
EXPR_RE = re.compile(
    r"^\s*([a-z_0-9]+)\s*(?:\[(.*)\])?\s*(<=|>=|<|>)\s*([+-])?\s*([0-9]+(?:\.[0-9]+)?)"
    r"\s*(ms|s|%)?\s*$"
)
EXAMPLES = "'p95<200ms', 'p95[WS rtt]<200ms', 'fail_ratio<1%', 'success>99%', 'rps>50', 'p95<+10%'"


@dataclass(frozen=True)
class CheckResult:
    check: str  # as the user wrote it
    metric: str
    op: str
    threshold: float  # ms, a fraction, rps, CPU %; a signed percent when relative
    actual: float | None  # None: the stats entry it names is not there
    ok: bool
    name: str | None = None  # the [NAME] it reads (None: the Aggregated row)
    relative: bool = False
    baseline: float | None = None  # the baseline run's value, for a relative check
    delta_pct: float | None = None  # actual against baseline, in percent
    # why it could not be measured: a name with no stats entry (a failure), or a name that
    # matches several methods (an error: the check must say which)
    problem: str | None = None
    ambiguous: bool = False
    says: str = ""  # what the check found, as shown after it: "actual 412 ms", "p95 412 ms vs …"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def actual_shown(self) -> str:
        return shown(self.metric, self.actual)


def shown(metric: str, value: float | None) -> str:
    """A measured value with its unit, as a person reads it (ratios as a percent)."""
    if value is None:
        return "-"
    if metric in RATIOS:
        return f"{value * 100:.3g} %"
    return f"{round(value, 1):g} {SHOWN_UNIT.get(metric, 'ms')}"


def pct_shown(pct: float) -> str:
    if math.isinf(pct):
        return "+inf%" if pct > 0 else "-inf%"
    return f"{pct:+.0f}%" if abs(pct) >= 10 else f"{pct:+.1f}%"


class Unmeasured(Exception):
    """A [NAME] that picks no single stats entry."""

    def __init__(self, message: str, ambiguous: bool = False):
        super().__init__(message)
        self.ambiguous = ambiguous


def row_of(summary: Summary, ref: str | None) -> EndpointStats:
    """The stats entry a check reads: the Aggregated row, the one entry called NAME, or
    the entry of METHOD and NAME ("GET /api/items")."""
    if ref is None:
        return summary.total
    same = [e for e in summary.endpoints if e.name == ref]
    if len(same) == 1:
        return same[0]
    if same:
        methods = ", ".join(sorted(e.method or "-" for e in same))
        raise Unmeasured(
            f"{ref!r} is {len(same)} stats entries ({methods}): name the method, "
            f"e.g. [{same[0].method} {ref}]",
            ambiguous=True,
        )
    method, _, name = ref.partition(" ")
    hit = [e for e in summary.endpoints if (e.method, e.name) == (method, name.strip())]
    if hit:
        return hit[0]
    names = sorted({e.name for e in summary.endpoints})
    listed = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    raise Unmeasured(f"no stats entry named {ref!r} (names: {listed or 'none'})")


@dataclass(frozen=True)
class Check:
    metric: str
    op: str
    value: float  # ms for times, a fraction for ratios, percent for cpu; signed % if relative
    text: str
    name: str | None = None  # [NAME]: one stats entry instead of the Aggregated row
    relative: bool = False  # against a baseline run (--baseline)

    def measure(self, summary: Summary) -> float:
        """Raises Unmeasured when [NAME] picks no single stats entry."""
        if self.metric == "cpu":
            return max(summary.workers_cpu.values(), default=0.0)
        t = row_of(summary, self.name)
        return {
            "p50": t.p50_ms,
            "p95": t.p95_ms,
            "p99": t.p99_ms,
            "avg": t.avg_ms,
            "max": t.max_ms,
            "fail_ratio": t.fail_ratio,
            "success": 1.0 - t.fail_ratio,
            "rps": t.rps,
        }[self.metric]

    @property
    def label(self) -> str:
        return self.metric + (f"[{self.name}]" if self.name is not None else "")

    def evaluate(self, summary: Summary, baseline: Summary | None = None) -> CheckResult:
        def result(ok: bool, says: str, **kw: Any) -> CheckResult:
            return CheckResult(
                self.text,
                self.metric,
                self.op,
                self.value,
                ok=ok,
                name=self.name,
                relative=self.relative,
                says=says,
                **kw,
            )

        try:
            actual = round(self.measure(summary), 6)
        except Unmeasured as e:
            return result(False, str(e), actual=None, problem=str(e), ambiguous=e.ambiguous)
        if not self.relative:
            ok = bool(OPS[self.op](actual, self.value))
            return result(ok, f"actual {shown(self.metric, actual)}", actual=actual)
        if baseline is None:
            why = "no baseline run to compare with (--baseline prev|last|RUN)"
            return result(False, why, actual=actual, problem=why)
        try:
            base = round(self.measure(baseline), 6)
        except Unmeasured as e:
            why = f"the baseline has {e}"
            return result(False, why, actual=actual, problem=why, ambiguous=e.ambiguous)
        pct = (actual - base) / base * 100 if base else (0.0 if actual == base else math.inf)
        pct = math.copysign(pct, actual - base) if math.isinf(pct) else pct
        ok = bool(OPS[self.op](pct, self.value))

        def num(v: float) -> str:  # "rps 106.1 vs 110 baseline", not "106.1 rps vs 110 rps"
            return f"{round(v, 1):g}" if self.metric == "rps" else shown(self.metric, v)

        says = (
            f"{self.label} {num(actual)} vs {num(base)} baseline "
            f"({pct_shown(pct)}) {self.op if ok else NOT[self.op]} {self.value:+g}%"
        )
        delta = None if math.isinf(pct) else round(pct, 2)
        return result(ok, says, actual=actual, baseline=base, delta_pct=delta)


def metric_of(recorded: dict[str, Any]) -> str:
    """The metric of a check read back from run.json (older records kept only its text)."""
    if recorded.get("metric"):
        return str(recorded["metric"])
    m = EXPR_RE.match(str(recorded.get("check", "")))
    return m.group(1) if m else ""


def parse_check(text: str, where: str = "--check") -> Check:
    """`where` names the source in the error: --check, or a swarm.toml table."""
    bad = f"bad {where} {text!r}"
    m = EXPR_RE.match(text)
    if not m:
        raise UsageError(f"{bad}: write METRIC[NAME] OP VALUE, e.g. {EXAMPLES}")
    metric, name, op, sign = m.group(1), m.group(2), m.group(3), m.group(4)
    num, unit = float(m.group(5)), m.group(6) or ""
    if metric not in METRICS:
        raise UsageError(f"{bad}: unknown metric {metric!r} (use one of {', '.join(METRICS)})")
    if name is not None:
        name = name.strip()
        if not name:
            raise UsageError(f"{bad}: [] names no stats entry: write e.g. {metric}[WS rtt]")
        if metric == "cpu":
            raise UsageError(f"{bad}: cpu is the nodes' peak, not a stats entry's: drop [{name}]")
    if sign:
        if unit != "%":
            raise UsageError(
                f"{bad}: a relative check is a signed percent of the baseline's value, "
                f"e.g. {metric}<+10%"
            )
        if metric == "cpu":
            raise UsageError(f"{bad}: cpu has no baseline: write cpu<90%")
        value = num if sign == "+" else -num
        return Check(metric, op, value, text.strip(), name, relative=True)
    if unit not in METRICS[metric]:
        allowed = " or ".join(repr(u) if u else "no unit" for u in METRICS[metric])
        relative = "" if metric == "cpu" else f" (or a signed percent: {metric}<+10%)"
        raise UsageError(f"{bad}: {metric} takes {allowed}{relative}")
    if unit == "s":
        num *= 1000.0
    if metric in RATIOS:
        num = num / 100.0 if unit == "%" else num
        if num > 1:
            raise UsageError(f"{bad}: {metric} is a fraction (0.01) or a percent (1%)")
    return Check(metric, op, num, text.strip(), name)


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
