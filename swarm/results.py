"""After a headless run: follow it, bring back results and logs, judge it, record it."""
from __future__ import annotations

import hashlib
import json
import platform
import shlex
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


from swarm import __version__
from swarm import locust as L
from swarm.core import locust_version
from swarm.errors import LocustError, RemoteError, SwarmError
from swarm.models import Node
from swarm.remote import fan_out

SATURATED_CPU = 90.0   # Locust warns above this; so do we


def results_dir_for(root: Path, stack: str, started: datetime) -> Path:
    d = root / stack / started.strftime("%Y%m%dT%H%M%SZ")
    n = 1
    while d.exists():   # two runs in the same second keep both
        n += 1
        d = root / stack / f"{started.strftime('%Y%m%dT%H%M%SZ')}-{n}"
    return d


CPU_EVERY = 3      # polls between two CPU samples of the worker hosts
END_WAIT_S = 30    # longest single exec waiting for the master's exit (a lost master shows then)


class CpuSampler:
    """Peak CPU per worker node, from /proc on the hosts themselves."""

    def __init__(self, workers: list[Node], runners, rd: str, processes: dict[str, int]):
        self.workers, self.runners, self.rd, self.processes = workers, runners, rd, processes
        self.last: dict[str, tuple[int, int, float]] = {}

    def sample(self, peaks: dict[str, float]) -> None:
        cmd = L.cpu_sample_cmd(self.rd)

        def one(node: Node):
            return L.parse_cpu_sample(self.runners[node.id].run(cmd, timeout=15, check=False).stdout)

        for res in fan_out(self.workers, one, what="cpu sample", raise_on_error=False):
            now = res.value if res.ok else None
            prev = self.last.get(res.node.name)
            if now is None:
                continue
            if prev is not None:
                pct = L.cpu_percent(prev, now, self.processes.get(res.node.name, 1))
                peaks[res.node.name] = max(peaks.get(res.node.name, 0.0), pct)
            self.last[res.node.name] = now


def follow(sess, master_runner, rd: str, web_port: int, deadline_s: float, outcome,
           sampler: CpuSampler | None = None, run_s: float | None = None) -> None:
    """Poll the master until its Locust exits; keep each worker's peak CPU, and which workers
    went missing while the test ran. Once the run time is over, wait for the exit on the master
    itself (one exec, bounded), so the end is noticed within 0.1 s, not up to a poll later."""
    from swarm.live import master_stats, summarize
    from swarm.runs import POLL_S

    end = time.monotonic() + deadline_s
    run_end = time.monotonic() + run_s if run_s else end
    last_note = time.monotonic()
    missing: set[str] = set()
    for i in range(int(deadline_s / POLL_S) + 12):
        wait_s = min(END_WAIT_S, end - time.monotonic()) if time.monotonic() >= run_end else 0
        wait = L.wait_exit_cmd(rd, wait_s) if wait_s > 0 else ""
        stats = master_stats(master_runner, rd, web_port, wait=wait, wait_s=wait_s)
        if not stats.get("_running"):
            break
        view = summarize(stats)
        if sampler is not None and i % CPU_EVERY == 0 and view["state"] in ("spawning", "running"):
            sampler.sample(outcome.cpu_peaks)
        for w in view["workers"]:
            key = w["node"] or str(w["id"])
            outcome.cpu_peaks[key] = max(outcome.cpu_peaks.get(key, 0.0), float(w["cpu"] or 0))
        if view["state"] in ("spawning", "running"):
            outcome.workers_seen = min(outcome.workers_seen, view["workers_connected"])
            missing.update(view["missing"])
        if time.monotonic() - last_note > 10 and view["state"] in ("spawning", "running"):
            last_note = time.monotonic()
            sess.report.info(f"running: {view['users']} users, {view['total_rps']:.1f} rps, "
                             f"{view['workers_connected']} workers")
        if time.monotonic() > end:
            outcome.missing = sorted(missing)
            raise LocustError(f"the run did not end within {deadline_s:.0f}s: "
                              "stop it with `swarm killall`")
        if not wait:
            time.sleep(max(0.0, min(POLL_S, run_end - time.monotonic())))
    outcome.missing = sorted(missing)


def finish_headless(sess, plan, opts, master: Node, workers: list[Node], runners, outcome,
                    started_at: datetime, results_root: Path):
    rd = sess.stack.config.bootstrap.remote_dir
    mr = runners[master.id]
    deadline = L.parse_duration(plan.spec.run_time) + 180
    error: SwarmError | None = None
    sampler = CpuSampler(workers, runners, rd, outcome.processes)
    try:
        follow(sess, mr, rd, plan.spec.web_port, deadline, outcome, sampler,
               run_s=L.parse_duration(plan.spec.run_time))
    except RemoteError as e:   # the master stopped answering (powered off, network)
        error = LocustError(f"lost the master during the run: {e}")
    except SwarmError as e:
        error = e     # still fetch whatever exists below
    ended_at = datetime.now(timezone.utc)
    out = results_dir_for(results_root, sess.stack.name, started_at)
    outcome.results_dir = out
    try:   # the master may be gone (powered off mid-run): still fetch from the others
        exit_res = mr.run(f"cat {shlex.quote(rd)}/locust.exit 2>/dev/null", timeout=20, check=False)
        outcome.exit_code = int(exit_res.stdout.strip())
    except (SwarmError, ValueError):
        outcome.exit_code = 1
        error = error or LocustError("the Locust master ended without an exit code: see "
                                     f"{out}/logs/master.log")
    try:
        fetch(sess, master, workers, runners, out)
    except OSError as e:
        raise _cannot_save(out, e) from None
    csv_path = out / f"{Path(L.CSV_PREFIX).name}_stats.csv"
    if csv_path.is_file():
        try:
            outcome.summary = L.parse_stats_csv(csv_path.read_text())
        except ValueError:
            outcome.summary = None
    if outcome.summary is not None:
        from dataclasses import replace
        peaks = {k: round(v, 1) for k, v in outcome.cpu_peaks.items()}
        outcome.summary = replace(outcome.summary, workers_cpu=peaks)
        outcome.checks = [c.evaluate(outcome.summary) for c in plan.checks]
    outcome.saturated = {k: round(v, 1) for k, v in outcome.cpu_peaks.items() if v > SATURATED_CPU}
    outcome.record = run_record(sess, plan, opts, master, workers, outcome, started_at, ended_at)
    try:
        (out / "run.json").write_text(json.dumps(outcome.record, indent=2))
    except OSError as e:
        raise _cannot_save(out, e) from None
    if error is not None:
        raise LocustError(f"{error} (logs and any partial results are in {out})")
    if outcome.summary is None:
        raise LocustError(f"the run produced no statistics: see {out}/logs/master.log")
    return outcome


def _cannot_save(out: Path, e: OSError) -> SwarmError:
    return SwarmError(f"cannot save the results in {out}: {e.strerror or e}; they stay on the "
                      "master until the next run: free space, then `swarm results --fetch`")


def fetch(sess, master: Node, workers: list[Node], runners, out: Path) -> None:
    """Results from the master, logs from everyone; a host that fails is named, not fatal.
    Failing to write here (a full disk) is: the first such OSError is raised after the fan-out."""
    rd = sess.stack.config.bootstrap.remote_dir
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    local: list[OSError] = []

    def get(node: Node) -> None:
        r = runners[node.id]
        try:    # runners turn network failures into RemoteError: an OSError here is local
            if node is master:
                r.get_tree(f"{rd}/{L.RESULTS_DIR}", out)
            (logs / f"{node.name}.log").write_bytes(r.run_bytes(f"cat {shlex.quote(rd)}/locust.log", timeout=60))
        except OSError as e:
            local.append(e)
            raise

    results = fan_out([master, *workers], get, what="fetch", raise_on_error=False)
    if local:
        raise local[0]
    for r in results:
        if not r.ok:
            sess.report.warn(f"could not fetch from {r.node.name}: {r.error}")


def file_hashes(files_dir: Path) -> dict[str, str]:
    out = {}
    for p in sorted(files_dir.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts and not p.name.endswith(".pyc"):
            out[p.relative_to(files_dir).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def run_record(sess, plan, opts, master, workers, outcome, started_at, ended_at) -> dict[str, Any]:
    types: dict[str, int] = {}
    for n in [master, *workers]:
        t = n.meta.get("instance_type") or sess.stack.provider
        types[t] = types.get(t, 0) + 1
    return {
        "swarm_version": __version__, "locust_version": locust_version(),
        "python": platform.python_version(), "stack": sess.stack.name,
        "provider": sess.stack.provider, "region": getattr(sess.provider, "region", None),
        "instances": {"master": master.meta.get("instance_type"), "workers": len(workers),
                      "types": types},
        "locustfile": plan.spec.locustfile, "files": file_hashes(plan.files_dir),
        "host": plan.spec.host, "users": plan.spec.users, "spawn_rate": plan.spec.spawn_rate,
        "run_time": plan.spec.run_time, "profile": plan.profile,
        "extra_args": list(plan.spec.extra_args),
        "started_at": started_at.isoformat(timespec="seconds"),
        "ended_at": ended_at.isoformat(timespec="seconds"),
        "exit_code": outcome.exit_code,
        "workers_expected": outcome.workers_expected, "workers_seen": outcome.workers_seen,
        "skipped_workers": [r.node.name for r in outcome.skipped],
        "saturated_workers": outcome.saturated,
        "missing_workers": outcome.missing,
        "workers_cpu_peak": {k: round(v, 1) for k, v in outcome.cpu_peaks.items()},
        "checks": outcome.checks,
        "summary": outcome.summary.to_json() if outcome.summary else None,
    }
