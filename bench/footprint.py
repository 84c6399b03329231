"""P5 footprint: peak RSS and CPU seconds (getrusage of the child, via _rusage.py) of the swarm
process for each command at the largest N, from the commands the other cycles ran anyway."""
from __future__ import annotations

from collections.abc import Iterable

from common import Cmd
from harness import Bench


def record(b: Bench, n: int, cmds: Iterable[Cmd], prefix: str = "P5") -> None:
    for c in cmds:
        b.sample(f"{prefix} {c.name}", n, {"rss_mb": c.rss_mb, "cpu_s": c.cpu,
                                     "cpu_per_host_s": c.cpu / (n + 1), "wall_s": c.wall,
                                     "aws_calls": sum((c.api_calls or {}).values())})
