"""Past runs: list them, show one again, compare two, fetch the latest again from the master.

Everything reads results/<stack>/<id>/run.json (or Locust's stats CSV when run.json is missing);
only fetch_latest touches the stack.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from swarm.errors import SwarmError, UsageError
from swarm.locust.argv import JSON_FILE, STATS_CSV
from swarm.locust.shell import results_probe
from swarm.locust.stats import Summary, parse_stats_csv, summary_from_json
from swarm.models import Role
from swarm.pipeline.fetch import fetch, results_dir_for
from swarm.pipeline.record import RUN_FILE, FetchedRecord, write
from swarm.pipeline.session import Session

METRICS = ("rps", "p50_ms", "p95_ms", "p99_ms", "avg_ms", "fail_ratio", "requests")
LOWER_IS_BETTER = {"p50_ms", "p95_ms", "p99_ms", "avg_ms", "fail_ratio"}


@dataclass
class RunInfo:
    id: str
    stack: str
    path: Path
    # run.json as read: written by any version of swarm (or half-written), so every key is
    # looked up with a default, never assumed
    record: dict[str, Any] | None  # None when missing or unreadable
    summary: Summary | None

    @property
    def complete(self) -> bool:
        return self.record is not None


def load_run(path: Path) -> RunInfo:
    """A run dir: its run.json, and its summary from there or else from Locust's stats CSV."""
    path, record, summary = Path(path), None, None
    try:
        record = json.loads((path / RUN_FILE).read_text())
        record = record if isinstance(record, dict) else None
        summary = summary_from_json((record or {})["summary"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    try:
        summary = summary or parse_stats_csv((path / STATS_CSV).read_text())
    except (OSError, ValueError):
        pass
    return RunInfo(path.name, path.parent.name, path, record, summary)


def list_runs(root: Path, stack: str | None) -> list[RunInfo]:
    """Runs of one stack (every stack when None), oldest first: ids are UTC timestamps."""
    stacks = [root / stack] if stack else sorted(p for p in Path(root).glob("*") if p.is_dir())
    runs = [load_run(d) for s in stacks if s.is_dir() for d in s.iterdir() if d.is_dir()]
    return sorted(runs, key=lambda r: (r.id, r.stack))


def resolve(runs: list[RunInfo], ref: str, stack: str) -> RunInfo:
    """A run by id, unique id prefix, path, or `last` / `prev`."""
    if ref in ("last", "prev"):
        i = -1 if ref == "last" else -2
        if len(runs) < -i:
            raise UsageError(f"stack {stack!r} has {len(runs)} run(s) in results/: no {ref!r} run")
        return runs[i]
    p = Path(ref)
    if ("/" in ref or ref.startswith(".")) and p.is_dir():
        return load_run(p)
    found = [r for r in runs if r.id == ref] or [r for r in runs if r.id.startswith(ref)]
    if len(found) == 1:
        return found[0]
    ids = [r.id for r in (found or runs)]
    shown = ", ".join(ids[-10:]) + (f" (and {len(ids) - 10} older)" if len(ids) > 10 else "")
    if found:
        raise UsageError(f"run {ref!r} is ambiguous: {len(found)} runs start with it ({shown})")
    raise UsageError(f"no run {ref!r} of stack {stack!r} (runs: {shown or 'none yet'})")


def _sha(rec: dict[str, Any]) -> str | None:
    return (rec.get("files") or {}).get(rec.get("locustfile") or "")


_SAME = (
    ("locustfile", lambda r: r.get("locustfile")),
    ("locustfile sha256", _sha),
    ("users", lambda r: r.get("users")),
    ("run_time", lambda r: r.get("run_time")),
    ("host", lambda r: r.get("host")),
    ("workers", lambda r: (r.get("instances") or {}).get("workers")),
    ("worker processes", lambda r: r.get("workers_expected")),
)


COMPARED = tuple(label for label, _ in _SAME)


def differences(a: RunInfo, b: RunInfo, labels: tuple[str, ...] = COMPARED) -> list[str]:
    """What makes two runs not comparable (empty when they are), among `labels`."""

    def show(label: str, v: Any) -> str:
        return "?" if v is None else str(v)[:12] if "sha" in label else str(v)

    pairs = (
        (label, get(a.record or {}), get(b.record or {})) for label, get in _SAME if label in labels
    )
    return [
        f"{label} {show(label, va)} vs {show(label, vb)}" for label, va, vb in pairs if va != vb
    ]


def compare(a: RunInfo, b: RunInfo) -> list[Delta]:
    """One row per (endpoint, metric): the total, then every endpoint present in both."""
    if a.summary is None or b.summary is None:
        missing = a if a.summary is None else b
        raise SwarmError(f"run {missing.id} has no statistics to compare ({missing.path})")
    eps_b = {(e.method, e.name): e for e in b.summary.endpoints}
    pairs = [("Total", a.summary.total, b.summary.total)]
    pairs += [
        (f"{e.method} {e.name}".strip(), e, eps_b[(e.method, e.name)])
        for e in a.summary.endpoints
        if (e.method, e.name) in eps_b
    ]
    return [
        Delta(label, m, va, vb, vb - va, round((vb - va) / va * 100, 2) if va else None)
        for label, ea, eb in pairs
        for m in METRICS
        for va, vb in [(float(getattr(ea, m)), float(getattr(eb, m)))]
    ]


@dataclass(frozen=True)
class Delta:
    """One metric of one endpoint in two runs."""

    endpoint: str
    metric: str
    a: float
    b: float
    delta: float
    delta_pct: float | None  # None when A is 0

    @property
    def worse(self) -> bool | None:
        """B is worse than A (None: the metric has no better direction)."""
        if self.metric in LOWER_IS_BETTER:
            return self.delta > 0
        return self.delta < 0 if self.metric == "rps" else None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RunRow:
    """One run in `swarm results`."""

    id: str
    stack: str
    path: str
    complete: bool
    fetched: bool
    started_at: str | None
    locustfile: str | None
    host: str | None
    users: int | None
    requests: int | None
    rps: float | None
    p95_ms: float | None
    fail_ratio: float | None
    verdict: str | None  # pass / fail / error / interrupted; None for an incomplete run
    exit_code: int | None  # Locust's
    checks_passed: int
    checks_failed: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def run_row(r: RunInfo) -> RunRow:
    rec, t = r.record or {}, r.summary.total if r.summary else None
    checks = rec.get("checks") or []
    return RunRow(
        r.id,
        r.stack,
        str(r.path),
        r.complete,
        bool(rec.get("fetched")),
        rec.get("started_at"),
        rec.get("locustfile"),
        rec.get("host"),
        rec.get("users"),
        t.requests if t else None,
        round(t.rps, 2) if t else None,
        t.p95_ms if t else None,
        round(t.fail_ratio, 6) if t else None,
        rec.get("verdict") or _older_verdict(rec, r.complete),
        rec.get("exit_code"),
        sum(bool(c.get("ok")) for c in checks),
        sum(not c.get("ok") for c in checks),
    )


def _older_verdict(rec: dict[str, Any], complete: bool) -> str | None:
    """Runs recorded before run.json had a verdict: the same rule, from what they kept."""
    if not complete or rec.get("exit_code") is None:
        return None
    failed = any(not c.get("ok") for c in rec.get("checks") or [])
    return "fail" if failed or rec.get("exit_code") else "pass"


def run_json(r: RunInfo) -> dict[str, Any]:
    return {
        "id": r.id,
        "stack": r.stack,
        "path": str(r.path),
        "complete": r.complete,
        "record": r.record,
        "summary": r.summary.to_json() if r.summary else None,
    }


# ---- --fetch: the master keeps <remote_dir>/results until the next run starts ----


def _started_at(stats_json: Path) -> str | None:
    """When Locust started counting, from its stats.json (the fetched run has no run.json)."""
    try:
        t = min(float(e["start_time"]) for e in json.loads(stats_json.read_text()))
        return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")
    except (OSError, ValueError, TypeError, KeyError):
        return None


def fetch_latest(sess: Session, root: Path) -> RunInfo:
    """Download the master's results and every node's log again, into a new run dir."""
    nodes = sess.nodes()
    masters = [n for n in nodes if n.role == Role.MASTER]
    if not masters:
        raise UsageError(f"stack {sess.stack.name!r} has no master: nothing to fetch")
    master, workers = masters[0], [n for n in nodes if n.role != Role.MASTER]
    runners = {n.id: sess.provider.runner(sess.stack, n) for n in [master, *workers]}
    try:
        probe = results_probe(sess.remote_dir)
        res = runners[master.id].run(probe.command, timeout=30, check=False)
        facts = probe.parse(res.stdout)
        if not facts.answered:
            raise SwarmError(
                f"could not ask the master for its results: {res.tail(1) or 'no answer'}"
            )
        if not facts.has_stats:
            raise SwarmError(
                f"the master of stack {sess.stack.name!r} has no results to fetch "
                f"(no headless run since `swarm up`, or a newer run cleared them)"
            )
        if facts.running:
            sess.report.warn("Locust still runs on the master: these results are partial")
        now = datetime.now(timezone.utc)
        out = results_dir_for(root, sess.stack.name, now, "-fetched")
        try:
            fetch(sess, master, workers, runners, out)
            run = load_run(out)
            if run.summary is None:
                raise SwarmError(
                    f"could not bring back the statistics into {out}: the results "
                    "stay on the master until the next run; `swarm results --fetch` "
                    "again once the cause is fixed"
                )
            write(
                out,
                FetchedRecord(
                    stack=sess.stack.name,
                    provider=sess.stack.provider,
                    started_at=_started_at(out / Path(JSON_FILE).name),
                    fetched_at=now.isoformat(timespec="seconds"),
                    workers=len(workers),
                    exit_code=facts.exit_code,
                    summary=run.summary,
                ),
            )
        except OSError as e:
            raise SwarmError(
                f"cannot write {out}: {e.strerror or e}; the results stay on the "
                "master: free space and run `swarm results --fetch` again"
            ) from e
        return load_run(out)
    finally:
        for r in runners.values():
            r.close()
