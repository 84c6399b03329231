"""`swarm logs`: Locust's or the bootstrap's log from one node or all, read or followed.
What to do with the bytes is the caller's (the CLI writes them, prefixed by node)."""

from __future__ import annotations

import shlex
import threading
from collections.abc import Callable

from swarm.errors import UsageError
from swarm.models import HostResult, Node
from swarm.pipeline.session import Session
from swarm.remote.base import Sink
from swarm.remote.fanout import fan_out


def pick(sess: Session, node: str) -> list[Node]:
    nodes = sess.nodes()
    chosen = nodes if node == "all" else [n for n in nodes if node in (n.name, n.id)]
    if not chosen:
        names = ", ".join(n.name for n in nodes) or "none"
        raise UsageError(f"no node {node!r} in stack {sess.stack.name!r} (nodes: {names}, or all)")
    return chosen


def _path(sess: Session, bootstrap: bool) -> str:
    return shlex.quote(f"{sess.remote_dir}/{'bootstrap.log' if bootstrap else 'locust.log'}")


def read(sess: Session, nodes: list[Node], *, bootstrap: bool) -> list[HostResult]:
    """Each node's log as its result's value; with several nodes an unreachable one is a
    failed result, with one it raises."""
    path = _path(sess, bootstrap)

    def one(n: Node) -> str:
        r = sess.provider.runner(sess.stack, n)
        try:
            return r.run(f"cat {path} 2>/dev/null || echo '(no log yet)'", timeout=60).stdout
        finally:
            r.close()

    return fan_out(nodes, one, what="logs", raise_on_error=len(nodes) == 1)


def follow(
    sess: Session, nodes: list[Node], sink_for: Callable[[Node], Sink], *, bootstrap: bool
) -> None:
    """Stream every node's log (the last 50 lines, then new ones) until Ctrl-C."""
    path = _path(sess, bootstrap)
    runners = {n.id: sess.provider.runner(sess.stack, n) for n in nodes}
    cmd = f"touch {path} 2>/dev/null; tail -n 50 -F {path} 2>/dev/null"
    threads = [
        threading.Thread(target=runners[n.id].stream, args=(cmd, sink_for(n)), daemon=True)
        for n in nodes
    ]
    try:
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():  # join in slices so Ctrl-C reaches the main thread
                t.join(0.5)
    finally:
        for r in runners.values():
            r.close()
