"""Bring a run back: the master's results and every node's Locust log, into a local dir."""

from __future__ import annotations

import shlex
from collections.abc import Collection
from datetime import datetime
from pathlib import Path

from swarm.errors import SwarmError
from swarm.locust.argv import RESULTS_DIR
from swarm.models import Node
from swarm.pipeline.session import Session
from swarm.remote.base import Runner
from swarm.remote.fanout import fan_out


def results_dir_for(root: Path, stack: str, started: datetime, suffix: str = "") -> Path:
    """results/<stack>/<UTC timestamp><suffix>; two runs in the same second keep both."""
    base = started.strftime("%Y%m%dT%H%M%SZ") + suffix
    d, n = root / stack / base, 1
    while d.exists():
        n += 1
        d = root / stack / f"{base}-{n}"
    return d


def cannot_save(out: Path, e: OSError) -> SwarmError:
    return SwarmError(
        f"cannot save the results in {out}: {e.strerror or e}; they stay on the "
        "master until the next run: free space, then `swarm results --fetch`",
        action="free space, then `swarm results --fetch`",
    )


def master_exit_code(sess: Session, runner: Runner) -> int | None:
    """The master's Locust exit code (locust.exit); None when it has none or cannot be asked."""
    try:
        res = runner.run(
            f"cat {shlex.quote(sess.remote_dir)}/locust.exit 2>/dev/null", timeout=20, check=False
        )
        return int(res.stdout.strip())
    except (SwarmError, ValueError):
        return None


def fetch(
    sess: Session,
    master: Node,
    workers: list[Node],
    runners: dict[str, Runner],
    out: Path,
    lost: Collection[str] = (),
) -> None:
    """Results from the master, logs from everyone; a host that fails is named, not fatal.
    Failing to write here (a full disk) is: the first such OSError is raised after the fan-out.
    Nodes in `lost` (by name: SSH stopped reaching them during the run) are not waited on."""
    rd = sess.remote_dir
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    local: list[OSError] = []

    def get(node: Node) -> None:
        r = runners[node.id]
        try:  # runners turn network failures into RemoteError: an OSError here is local
            if node is master:
                r.get_tree(f"{rd}/{RESULTS_DIR}", out)
            (logs / f"{node.name}.log").write_bytes(
                r.run_bytes(f"cat {shlex.quote(rd)}/locust.log", timeout=60)
            )
        except OSError as e:
            local.append(e)
            raise

    for node in [master, *workers]:
        if node.name in lost:
            sess.report.warn(f"not fetched from {node.name}: it stopped answering during the run")
    answering = [n for n in [master, *workers] if n.name not in lost]
    results = fan_out(answering, get, what="fetch", raise_on_error=False)
    if local:
        raise local[0]
    for r in results:
        if not r.ok:
            sess.report.warn(f"could not fetch from {r.node.name}: {r.error}")
