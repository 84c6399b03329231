"""The baseline of a run (`--baseline prev|last|RUN`): which past run its relative checks
(`p95<+10%`) compare with, and whether the two are comparable (seed 002: controlled runs).

`last` is the stack's newest run with statistics, whatever its verdict; `prev` the newest whose
verdict was pass, so a regression stays failing until it is fixed instead of becoming the
yardstick. RUN is anything `swarm results RUN` takes (an id, a unique prefix, a path).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from swarm.errors import UsageError
from swarm.locust.argv import RunSpec
from swarm.locust.stats import Summary
from swarm.pipeline.history import COMPARED, RunInfo, differences, list_runs, resolve, run_row
from swarm.pipeline.record import file_sha256

PREV, LAST = "prev", "last"
# known on this machine before anything is shipped; the worker counts are known for sure only
# once the workers answered (an unreachable one is skipped; `processes = -1` is their cores)
PLANNED = tuple(c for c in COMPARED if c not in ("workers", "worker processes"))
AT_START = ("workers", "worker processes")


@dataclass(frozen=True)
class Baseline:
    ref: str  # as given: prev, last, an id, a path
    run: RunInfo  # has a record and a summary: find() refuses a run without
    anyway: bool  # --baseline-anyway: compare even when the runs are not comparable

    @property
    def id(self) -> str:
        return self.run.id

    @property
    def summary(self) -> Summary | None:
        return self.run.summary

    def check(self, now: RunInfo, labels: tuple[str, ...]) -> list[str]:
        """What makes `now` not comparable with the baseline (raises unless --baseline-anyway)."""
        diff = differences(self.run, now, labels)
        if diff and not self.anyway:
            raise UsageError(
                f"baseline {self.id} is not comparable with this run (baseline vs now: "
                f"{'; '.join(diff)}): nothing started; --baseline-anyway compares all the same"
            )
        return diff


def find(root: Path, stack: str, ref: str, anyway: bool) -> Baseline:
    runs = list_runs(root, stack)
    judged = [r for r in runs if r.complete and r.summary is not None]
    where = f"stack {stack!r} has no {{}} in {root / stack}/ yet: run once without --baseline"
    if ref == LAST:
        if not judged:
            raise UsageError(f"--baseline last: {where.format('run with statistics')}")
        return Baseline(ref, judged[-1], anyway)
    if ref == PREV:
        passed = [r for r in judged if run_row(r).verdict == "pass"]
        if not passed:
            raise UsageError(f"--baseline prev: {where.format('passed run')}")
        return Baseline(ref, passed[-1], anyway)
    try:
        run = resolve(runs, ref, stack)
    except UsageError as e:
        raise UsageError(f"--baseline: {e}") from None
    if run.summary is None or not run.complete:
        raise UsageError(f"--baseline {ref}: run {run.id} has no statistics ({run.path})")
    return Baseline(ref, run, anyway)


def this_run(spec: RunSpec, files_dir: Path, workers: int, processes: int | None) -> RunInfo:
    """The run about to start, in run.json's terms, for `differences`."""
    record = {
        "locustfile": spec.locustfile,
        "files": {spec.locustfile: file_sha256(files_dir / spec.locustfile)},
        "users": spec.users,
        "run_time": spec.run_time,
        "host": spec.host,
        "instances": {"workers": workers},
        "workers_expected": processes,
    }
    return RunInfo("this run", "", files_dir, record, None)
