"""What every part of the bench shares: paths, the lab's fixed settings, the project files the
bench writes, the record of one swarm command, and what is checked or noted about the machine.

The bench's modules import each other by their bare names (`import common`): `python
bench/bench.py` puts bench/ first on sys.path, and this module puts the repository on it.
"""
from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# swarm's pure builders (pure modules: no locust import) -- the bench's only imports from
# swarm, all here so that they can be repointed in one edit; the other modules take them from
# this one.
from swarm import __version__ as SWARM_VERSION  # noqa: E402
from swarm.locust import argv as locust_argv  # noqa: E402, F401
from swarm.locust import shell as locust_shell  # noqa: E402, F401
from swarm.locust import stats as locust_stats  # noqa: E402, F401
from swarm.remote.base import replace_tree_cmd, tar_bytes  # noqa: E402, F401

LOCUST_VERSION = dist_version("locust")
RESULTS_JSON = Path(__file__).resolve().parent / "results.json"
RUSAGE = Path(__file__).resolve().parent / "_rusage.py"
STACK = "bench"
RD = "swarm"                      # [bootstrap] remote_dir (default)
WEB_PORT, MASTER_PORT = 8089, 5557
LAB_NETS = ("10.77.0.0/16",)
CMD_TIMEOUT = 600                 # bound on any one swarm command

LIGHT_LOCUSTFILE = """\
from locust import FastHttpUser, constant, task


class Light(FastHttpUser):
    wait_time = constant(1)

    @task
    def index(self):
        self.client.get("/")
"""

MAX_LOCUSTFILE = """\
from locust import FastHttpUser, task


class Max(FastHttpUser):
    # no wait: as many requests as one process can make
    @task
    def index(self):
        self.client.get("/")
"""

BOOTSTRAP_WRAPPER = """\
#!/usr/bin/env bash
# bench: the project's bootstrap.sh as is, minus raising the open-file limit: emulated hosts
# share /etc with the machine running the bench.
export SWARM_SKIP_LIMITS=1
exec bash "$(dirname "$0")/bootstrap.sh" "$@"
"""

NOOP_BOOTSTRAP = """\
#!/usr/bin/env bash
# bench P3: measures the upload only; Locust is already on the emulated hosts' PATH.
echo "bootstrap done (no-op, $(ls "$(dirname "$0")" | wc -l) files)"
"""


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def median(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


# --------------------------------------------------------------------------- running swarm

@dataclass
class Cmd:
    name: str
    argv: list[str]
    code: int
    wall: float                   # s, from spawning `swarm` to its exit
    cpu: float                    # user + sys s of swarm and anything it waited for
    rss_mb: float                 # peak RSS (MiB)
    t0: float                     # time.time() when spawned
    out: str
    err: str
    marks: list[tuple[float, str]] = field(default_factory=list)   # (s since t0, stderr line)
    api_calls: Counter | None = None                                # AWS API calls it made
    link_bytes: int = 0           # bytes the controller sent into the lab (the bridge's tx)
    ssh: Counter = field(default_factory=Counter)   # sshd's counts of the controller's tcp/execs
    hosts: int = 0                # hosts of the stack before or after, whichever is more

    def mark(self, needle: str) -> float | None:
        return next((t for t, line in self.marks if needle in line), None)

    def brief(self) -> dict[str, Any]:
        return {"name": self.name, "code": self.code, "wall_s": round(self.wall, 3),
                "cpu_s": round(self.cpu, 3), "rss_mb": round(self.rss_mb, 1),
                "link_bytes": self.link_bytes, "ssh": dict(self.ssh), "hosts": self.hosts,
                "marks": [(round(t, 3), s) for t, s in self.marks]}


class SwarmFailed(RuntimeError):
    pass


# --------------------------------------------------------------------------- the machine

def preflight() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, sshd per emulated host)"
    for tool in ("ip", "unshare", "nsenter", "ssh-keygen"):
        if not shutil.which(tool):
            return f"`{tool}` not found: run `sh tests/system-deps.sh bench`"
    if not os.access("/usr/sbin/sshd", os.X_OK):
        return "/usr/sbin/sshd not found: run `sh tests/system-deps.sh bench`"
    if "locust" in sys.modules or "gevent" in sys.modules:
        return "internal: the bench process must not import locust (gevent would patch moto's threads)"
    return None


def machine_info() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_kb = int(next(x for x in Path("/proc/meminfo").read_text().splitlines()
                          if x.startswith("MemTotal")).split()[1])
    except (OSError, StopIteration, ValueError):
        mem_kb = 0
    try:
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "swarm"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev, dirty = "", ""
    osname = ""
    try:
        osname = next(x.split("=", 1)[1].strip('"') for x in Path("/etc/os-release").read_text().splitlines()
                      if x.startswith("PRETTY_NAME="))
    except (OSError, StopIteration):
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "mem_gib": round(mem_kb / 1048576, 1),
            "kernel": platform.release(), "os": osname, "python": platform.python_version(),
            "locust": LOCUST_VERSION, "swarm": SWARM_VERSION, "git": rev + ("+dirty swarm/" if dirty else ""),
            "openssh": subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip(),
            "paramiko": dist_version("paramiko"), "moto": dist_version("moto")}
