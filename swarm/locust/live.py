"""What a running Locust says: the master's web API, read on the master itself (its UI is bound
to the master's loopback), with the run's meta, mapped back to swarm's node names. Pure: the
pipeline runs `master_stats_probe(...).command` on the master and parses what it printed."""

from __future__ import annotations

import json
import shlex
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from swarm.locust import roster
from swarm.locust.roster import RosterEntry
from swarm.locust.shell import running_cmd, stats_url_cmd
from swarm.models import Node, Probe, Role, Word

RUN_META = "run-meta.json"  # on the master, under the remote dir: what `swarm run` expects


class RunState(Word):
    """Locust's runner states (and a worker's `missing`), plus swarm's `unknown`."""

    READY = "ready"
    SPAWNING = "spawning"
    RUNNING = "running"
    CLEANUP = "cleanup"
    STOPPING = "stopping"
    STOPPED = "stopped"
    MISSING = "missing"
    UNKNOWN = "unknown"

    @classmethod
    def of(cls, word: object) -> RunState:
        try:
            return cls(str(word))
        except ValueError:  # a state word of a newer Locust
            return cls.UNKNOWN

    @property
    def active(self) -> bool:
        """Users are being started or make requests."""
        return self in (RunState.SPAWNING, RunState.RUNNING)


@dataclass(frozen=True)
class RunMeta:
    """Written on the master when a run starts, so `status` from any machine knows what to
    expect: worker processes per node, and each worker node's hostname."""

    expected: int = 0
    processes: dict[str, int] = field(default_factory=dict)  # node name -> processes
    hostnames: dict[str, str] = field(default_factory=dict)  # node name -> hostname
    locustfile: str | None = None
    host: str | None = None
    started_at: str | None = None
    # what a worker joining mid-run starts (`up workers`): the run's worker command line, and
    # [locust] processes as the run read it (-1: one per core)
    worker_argv: list[str] = field(default_factory=list)
    per_worker: int = 1
    profile: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def with_roster(self, entries: list[RosterEntry]) -> RunMeta:
        """What the run expects now: its joiners in, its leavers out (a leaver keeps its
        hostname, so its worker is still named until it has quit)."""
        if not entries:
            return self
        processes, hostnames = dict(self.processes), dict(self.hostnames)
        for e in entries:
            if e.event == roster.Move.JOINED:
                processes[e.worker] = e.processes
                hostnames[e.worker] = e.hostname
            else:
                processes.pop(e.worker, None)
        return replace(
            self, expected=sum(processes.values()), processes=processes, hostnames=hostnames
        )

    @classmethod
    def from_json(cls, d: Any) -> RunMeta:
        if not isinstance(d, dict):
            return cls()
        return cls(
            int(d.get("expected") or 0),
            dict(d.get("processes") or {}),
            dict(d.get("hostnames") or {}),
            d.get("locustfile"),
            d.get("host"),
            d.get("started_at"),
            [str(a) for a in d.get("worker_argv") or []],
            int(d.get("per_worker") or 1),
            d.get("profile"),
        )


def write_meta_cmd(meta: RunMeta) -> str:
    return f"printf '%s' {shlex.quote(json.dumps(meta.to_json()))} > {RUN_META}"


@dataclass(frozen=True)
class MasterStats:
    api: dict[str, Any]  # Locust's /stats/requests, as Locust wrote it ({} if silent)
    running: bool  # the Locust this remote dir started is alive
    meta: RunMeta
    counted: int | None  # workers a wait loop last counted (wait_workers_cmd)
    roster: list[RosterEntry] = field(default_factory=list)  # joined / left since the start

    @property
    def worker_count(self) -> int:
        """The API's figure may be up to 2 s old (Locust caches it); the loop's count is not."""
        return max(int(self.api.get("worker_count", 0)), self.counted or 0)


def master_stats_probe(rd: str, web_port: int, wait: str = "") -> Probe[MasterStats]:
    """/stats/requests + whether Locust runs + the run's meta and roster, in one round trip;
    `wait` is a shell loop run first, on the master (see shell.wait_*_cmd). The roster is read
    after the API: a joiner is in it only once connected, a leaver before it quits."""
    q = shlex.quote(rd)
    cmd = (
        f"{wait + '; ' if wait else ''}{stats_url_cmd(web_port)}; echo; echo @@; "
        f"{running_cmd(rd)}; echo @@; cat {q}/{RUN_META} 2>/dev/null; echo; echo @@; "
        f'echo "${{n:-}}"; echo @@; {roster.read_cmd(rd)}'
    )
    return Probe(cmd, _parse_master_stats)


def _json_or(text: str, empty: Any) -> Any:
    try:
        return json.loads(text) if text.strip() else empty
    except json.JSONDecodeError:
        return empty


def _parse_master_stats(stdout: str) -> MasterStats:
    parts = stdout.split("@@") + ["", "", "", ""]
    api = _json_or(parts[0], {})
    try:
        counted = int(parts[3].strip()) if parts[3].strip() else None
    except ValueError:
        counted = None
    return MasterStats(
        api if isinstance(api, dict) else {},
        parts[1].strip() == "yes",
        RunMeta.from_json(_json_or(parts[2], {})),
        counted,
        roster.parse(parts[4]),
    )


def node_of(worker_id: str, hostnames: dict[str, str]) -> str | None:
    """Locust names a worker '<hostname>_<uuid>'; find which of our nodes has that hostname."""
    host = worker_id.rsplit("_", 1)[0]
    matches = [name for name, h in hostnames.items() if h == host]
    return matches[0] if len(matches) == 1 else None


@dataclass(frozen=True)
class WorkerView:
    id: str
    node: str | None  # our node's name, when its hostname is unique
    state: RunState
    users: int | None
    cpu: float | None  # Locust's own figure (every 10 s; its first is always 0)


@dataclass(frozen=True)
class LiveView:
    """The status view of a master: state, users, workers vs expected, rps, p95, CPU."""

    running: bool
    state: RunState
    users: int = 0
    workers_connected: int = 0
    workers_expected: int = 0
    missing: list[str] = field(default_factory=list)  # worker nodes short of processes
    total_rps: float = 0.0
    fail_ratio: float = 0.0
    p95_ms: float | None = None
    workers: list[WorkerView] = field(default_factory=list)
    locustfile: str | None = None
    host: str | None = None
    error: str | None = None  # the master could not be asked
    processes: dict[str, int] = field(default_factory=dict)  # worker node -> Locust processes
    roster: list[RosterEntry] = field(default_factory=list)  # workers that joined / left it

    @classmethod
    def unreachable(cls, error: str) -> LiveView:
        return cls(running=False, state=RunState.UNKNOWN, error=error)

    def to_json(self) -> dict[str, Any]:
        if self.error is not None:
            return {"running": False, "state": str(self.state), "error": self.error}
        d = asdict(self)
        d.pop("error")
        return d


def summarize(stats: MasterStats) -> LiveView:
    api, meta = stats.api, stats.meta.with_roster(stats.roster)
    workers = []
    connected: dict[str, int] = {}
    for w in api.get("workers", []):
        if w.get("state") == "missing":
            continue
        name = node_of(str(w.get("id", "")), meta.hostnames)
        if name:
            connected[name] = connected.get(name, 0) + 1
        workers.append(
            WorkerView(
                w.get("id"),
                name,
                RunState.of(w.get("state")),
                w.get("user_count"),
                w.get("cpu_usage"),
            )
        )
    missing = [n for n, want in sorted(meta.processes.items()) if connected.get(n, 0) < want]
    if len(set(meta.hostnames.values())) < len(meta.hostnames):
        missing = []  # several nodes share a hostname (local provider): only counts are known
    total = (api.get("stats") or [{}])[-1]
    return LiveView(
        running=stats.running,
        state=RunState.of(api.get("state", "stopped")) if stats.running else RunState.STOPPED,
        users=api.get("user_count", 0),
        workers_connected=int(api.get("worker_count", len(workers))),
        workers_expected=meta.expected,
        missing=missing,
        total_rps=round(float(api.get("total_rps") or 0.0), 2),
        fail_ratio=round(float(api.get("fail_ratio") or 0.0), 6),
        p95_ms=total.get("response_time_percentile_0.95"),
        workers=workers,
        locustfile=meta.locustfile,
        host=meta.host,
        processes=dict(meta.processes),
        roster=list(stats.roster),
    )


def expected_by_node(workers: list[Node], nprocs: dict[str, int], per: int) -> dict[str, int]:
    """Worker processes each worker node runs: `per`, or its core count when per is -1."""
    return {
        w.name: (nprocs.get(w.id, 1) if per == -1 else per)
        for w in workers
        if w.role == Role.WORKER
    }
