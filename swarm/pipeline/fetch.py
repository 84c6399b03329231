"""Bring a run back: the master's results and every node's Locust log, into a local dir.

A worker that left the run before its end (`swarm down workers`, a smaller `-n`) is gone by
then: midrun kept its log on the master, under the results, and it comes back with them."""

from __future__ import annotations

import os
import shlex
import tempfile
from collections.abc import Collection
from datetime import datetime
from pathlib import Path

from swarm.errors import SwarmError
from swarm.locust.argv import RESULTS_DIR
from swarm.locust.shell import wait_exit_cmd
from swarm.models import Node
from swarm.pipeline.session import Session
from swarm.remote.base import Runner, untar_bytes
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


# The master's results/, its log and its exit code in one tar: one round trip at the end of
# a run, where three execs were (the code, the tree, the log). Whatever exists is sent.
MASTER_FILES = (RESULTS_DIR, "locust.log", "locust.exit")
# The logs of workers that left the run, `<node name>.log` each: under the results, so a
# run's start clears them with its results (a later run never brings back an earlier one's)
LEFT_LOGS = "left-workers"


def master_bundle_cmd(rd: str) -> str:
    names = " ".join(MASTER_FILES)
    return (
        f"cd {shlex.quote(rd)} && set -- && for f in {names}; do "
        '[ -e "$f" ] && set -- "$@" "$f"; done; tar -czf - "$@"'
    )


def unpack_master_bundle(
    data: bytes, out: Path, log: Path, taken: Collection[str] = ()
) -> int | None:
    """results/ into out, the log to `log`, the leavers' logs beside it (`<name>.left.log`
    where a worker of that name is still in the run: it came back) -> the exit code (None:
    Locust left none)."""
    with tempfile.TemporaryDirectory(dir=out, prefix=".bundle-") as tmp:
        got = Path(tmp)
        untar_bytes(data, got)
        left = got / RESULTS_DIR / LEFT_LOGS
        if left.is_dir():
            for child in left.glob("*.log"):
                name = child.name if child.stem not in taken else f"{child.stem}.left.log"
                os.replace(child, log.parent / name)
            left.rename(got / LEFT_LOGS)  # not among the results
        if (got / RESULTS_DIR).is_dir():
            for child in (got / RESULTS_DIR).iterdir():
                os.replace(child, out / child.name)
        if (got / "locust.log").is_file():
            os.replace(got / "locust.log", log)
        try:
            return int((got / "locust.exit").read_text().strip())
        except (OSError, ValueError):
            return None


def fetch(
    sess: Session,
    master: Node,
    workers: list[Node],
    runners: dict[str, Runner],
    out: Path,
    lost: Collection[str] = (),
    quitting_s: float = 0.0,
) -> int | None:
    """Results from the master, logs from everyone; a host that fails is named, not fatal.
    Failing to write here (a full disk) is: the first such OSError is raised after the fan-out.
    Nodes in `lost` (by name: SSH stopped reaching them during the run) are not waited on.
    `quitting_s`: the workers were told to quit; each log is taken once its Locust has
    exited, or after that long (the master does not wait for them: they quit while its
    results come back).
    -> the master's Locust exit code (None: it left none, or it could not be reached)."""
    rd = sess.remote_dir
    cat_log = f"cat {shlex.quote(rd)}/locust.log"
    if quitting_s > 0:
        cat_log = f"{wait_exit_cmd(rd, quitting_s)}; {cat_log}"
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    local: list[OSError] = []
    codes: list[int | None] = []

    def get(node: Node) -> None:
        r = runners[node.id]
        log = logs / f"{node.name}.log"
        try:  # runners turn network failures into RemoteError: an OSError here is local
            if node is master:
                bundle = r.run_bytes(master_bundle_cmd(rd), timeout=120)
                taken = {w.name for w in workers}
                codes.append(unpack_master_bundle(bundle, out, log, taken))
                return
            log.write_bytes(r.run_bytes(cat_log, timeout=60 + quitting_s))
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
    return codes[0] if codes else None
