"""What a running Locust says: the master's web API, read from the master itself (its UI is
bound to the master's loopback), mapped back to our node names."""
from __future__ import annotations

import json
import shlex
from typing import Any

from swarm import locust as L
from swarm.errors import SwarmError
from swarm.models import MASTER, WORKER, Node

RUN_META = "run-meta.json"   # on the master, under the remote dir: what `swarm run` expects


def write_meta_cmd(meta: dict[str, Any]) -> str:
    return f"printf '%s' {shlex.quote(json.dumps(meta))} > {RUN_META}"


def master_stats(runner, rd: str, web_port: int, wait: str = "", wait_s: float = 0) -> dict[str, Any]:
    """/stats/requests + whether Locust runs + the run's meta, in one round trip; `wait` is a
    shell loop run first, on the master, for at most wait_s (see locust.wait_*_cmd)."""
    q = shlex.quote(rd)
    cmd = (f"{wait + '; ' if wait else ''}{L.stats_url_cmd(web_port)}; echo; echo @@; "
           f"{L.running_cmd(rd)}; echo @@; cat {q}/{RUN_META} 2>/dev/null; echo; echo @@; "
           'echo "${n:-}"')
    res = runner.run(cmd, timeout=20 + wait_s, check=False)
    parts = res.stdout.split("@@")
    body = parts[0].strip() if parts else ""
    try:
        data = json.loads(body) if body else {}
    except json.JSONDecodeError:
        data = {}
    data["_running"] = len(parts) > 1 and parts[1].strip() == "yes"
    try:    # what a wait loop last counted (wait_workers_cmd), else nothing
        data["_counted"] = int(parts[3].strip()) if len(parts) > 3 and parts[3].strip() else None
    except ValueError:
        data["_counted"] = None
    try:
        data["_meta"] = json.loads(parts[2]) if len(parts) > 2 and parts[2].strip() else {}
    except json.JSONDecodeError:
        data["_meta"] = {}
    return data


def node_of(worker_id: str, hostnames: dict[str, str]) -> str | None:
    """Locust names a worker '<hostname>_<uuid>'; find which of our nodes has that hostname."""
    host = worker_id.rsplit("_", 1)[0]
    matches = [name for name, h in hostnames.items() if h == host]
    return matches[0] if len(matches) == 1 else None


def summarize(stats: dict[str, Any]) -> dict[str, Any]:
    """The status view of a master's stats: state, users, workers vs expected, rps, p95, CPU."""
    meta = stats.get("_meta", {})
    hostnames: dict[str, str] = meta.get("hostnames", {})
    per_node: dict[str, int] = meta.get("processes", {})
    workers = []
    connected: dict[str, int] = {}
    for w in stats.get("workers", []):
        if w.get("state") == "missing":
            continue
        name = node_of(str(w.get("id", "")), hostnames)
        if name:
            connected[name] = connected.get(name, 0) + 1
        workers.append({"id": w.get("id"), "node": name, "state": w.get("state"),
                        "users": w.get("user_count"), "cpu": w.get("cpu_usage")})
    missing = [n for n, want in sorted(per_node.items()) if connected.get(n, 0) < want]
    if len(set(hostnames.values())) < len(hostnames):
        missing = []     # several nodes share a hostname (local provider): only counts are known
    total = (stats.get("stats") or [{}])[-1]
    running = stats.get("_running", False)
    return {
        "running": running,
        "state": stats.get("state", "stopped") if running else "stopped",
        "users": stats.get("user_count", 0),
        "workers_connected": int(stats.get("worker_count", len(workers))),
        "workers_expected": int(meta.get("expected", 0)),
        "missing": missing,
        "total_rps": round(float(stats.get("total_rps") or 0.0), 2),
        "fail_ratio": round(float(stats.get("fail_ratio") or 0.0), 6),
        "p95_ms": total.get("response_time_percentile_0.95"),
        "workers": workers,
        "locustfile": meta.get("locustfile"), "host": meta.get("host"),
    }


def live_status(sess) -> dict[str, Any] | None:
    """The stack's Locust as its master sees it; None when there is no master."""
    masters = sess.nodes(MASTER)
    if not masters:
        return None
    cfg = sess.stack.config
    runner = sess.provider.runner(sess.stack, masters[0])
    try:
        return summarize(master_stats(runner, cfg.bootstrap.remote_dir, cfg.locust.web_port))
    except SwarmError as e:
        return {"running": False, "state": "unknown", "error": str(e)}
    finally:
        runner.close()


def expected_by_node(workers: list[Node], nprocs: dict[str, int], per: int) -> dict[str, int]:
    return {w.name: (nprocs.get(w.id, 1) if per == -1 else per) for w in workers if w.role == WORKER}
