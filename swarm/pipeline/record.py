"""Record a run: run.json, what makes a run reproducible and comparable, and its verdicts."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from swarm import __version__
from swarm.locust.roster import Participant
from swarm.locust.stats import Summary
from swarm.pipeline.judge import CheckResult, Verdict

RUN_FILE = "run.json"


@dataclass(frozen=True)
class Instances:
    master: str | None  # the master's instance type (None off EC2)
    workers: int  # worker nodes that took part
    types: dict[str, int]  # instance type (or provider) -> nodes


@dataclass(frozen=True)
class RunRecord:
    """run.json of a headless run (keys in this order)."""

    swarm_version: str
    locust_version: str
    python: str
    stack: str
    provider: str
    region: str | None
    instances: Instances
    locustfile: str
    files: dict[str, str]  # shipped file -> sha256
    host: str
    users: int
    spawn_rate: float
    run_time: str | None
    profile: str | None
    extra_args: list[str]
    worker_args: list[str]
    # [locust] env's names (with otel, the OTEL_* ones passed through too): reproducible;
    # the values may be secrets
    env_names: list[str]
    otel: bool  # [locust] otel: Locust's --otel on every node
    started_at: str
    ended_at: str
    verdict: Verdict
    swarm_exit_code: int  # what `swarm run` exited with
    exit_code: int  # Locust's (1 when the master gave none)
    workers_expected: int
    workers_seen: int
    # every worker node that took part: joined_at / left_at (None: from the start / till the
    # end), so workers joining or leaving mid-run (`swarm up workers`) are on record
    workers: list[Participant]
    skipped_workers: list[str]
    saturated_workers: dict[str, float]
    missing_workers: list[str]
    workers_cpu_peak: dict[str, float]
    master_cpu_peak: float | None
    baseline: str | None  # the id of the run the relative checks compared with
    # what made the baseline not comparable, compared all the same (--baseline-anyway)
    baseline_differences: list[str]
    checks: list[CheckResult]
    summary: Summary | None

    def to_json(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k not in ("checks", "summary")}
        d["checks"] = [c.to_json() for c in self.checks]
        d["summary"] = self.summary.to_json() if self.summary else None
        return d


@dataclass(frozen=True)
class FetchedRecord:
    """run.json of results fetched again from the master (`swarm results --fetch`)."""

    stack: str
    provider: str
    started_at: str | None  # when Locust started counting (from its stats.json)
    fetched_at: str
    workers: int
    exit_code: int | None
    summary: Summary
    swarm_version: str = __version__
    fetched: bool = True
    checks: list[CheckResult] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "swarm_version": self.swarm_version,
            "stack": self.stack,
            "provider": self.provider,
            "fetched": self.fetched,
            "started_at": self.started_at,
            "fetched_at": self.fetched_at,
            "instances": {"workers": self.workers},
            "exit_code": self.exit_code,
            "checks": [c.to_json() for c in self.checks],
            "summary": self.summary.to_json(),
        }


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def file_hashes(files_dir: Path) -> dict[str, str]:
    out = {}
    for p in sorted(files_dir.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts and not p.name.endswith(".pyc"):
            out[p.relative_to(files_dir).as_posix()] = file_sha256(p)
    return out


def write(out: Path, record: RunRecord | FetchedRecord) -> None:
    """Raises OSError (a full disk): the caller says where the results still are."""
    (out / RUN_FILE).write_text(json.dumps(record.to_json(), indent=2))
