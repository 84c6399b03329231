"""The controller's cost per host of every command: CPU-s of the swarm process, TCP connections
it opened and sessions (exec round trips) it started (the hosts' sshd logs, from the
controller's address only), bytes it sent into the lab (the bridge's tx); each divided by the
hosts of the stack (before or after the command, whichever is more). Recorded at every N."""
from __future__ import annotations

from collections.abc import Iterable

from common import Cmd
from harness import Bench


def record(b: Bench, n: int, cmds: Iterable[Cmd]) -> None:
    for c in cmds:
        h = max(c.hosts, 1)
        b.sample(f"C {c.name}", n, {"hosts": h, "cpu_per_host_s": c.cpu / h,
                                    "tcp_per_host": c.ssh.get("tcp", 0) / h,
                                    "execs_per_host": c.ssh.get("execs", 0) / h,
                                    "kb_per_host": c.link_bytes / h / 1000})
