#!/usr/bin/env python3
"""What swarm adds on top of EC2 and Locust, measured on emulated hosts.

    make bench                      # as root: installs nginx-light if missing, runs in a lab netns
    python tests/run_in_lab.py -- .venv/bin/python bench/bench.py [--reps 3] [--sizes 1,10,30]
                                    [--only P1,P2,P3,P4] [--quick] [--profile py-spy|py-spy-gil|...]
    .venv/bin/python bench/bench.py --report [bench/results.json]    # the table of an earlier run

The `swarm` CLI runs as a user runs it (a subprocess, provider ec2) against moto (in this
process) whose instances are emulated hosts (a network namespace + a real sshd each, see
tests/emulation). Every figure is the median of --reps runs; every goal is a ratio (or a
footprint) measured in this one run. Results: a table on stdout and bench/results.json.

Definitions (see docs/performance.md):
  P1 bring-up  wall time of `swarm up workers -n N` (after `up master`), the real bootstrap.sh.
  P2 start     wall time of `swarm run` in UI mode: it returns once every worker process is
               connected to the master (checked independently on the master's /stats/requests).
               Also: headless, time from invoking `swarm run --headless` to the master's log line
               "Sending spawn jobs ... to N ready workers" (the test has started on all N).
  P3 upload    `swarm up workers -n N` with a 200-file, 5 MB bootstrap/ and a no-op script: time
               from swarm's "bootstrapping" line to its exit; per host, from sshd's own log: TCP
               connections, authenticated connections, exec sessions, bytes received.
  P4 per core  requests/s (counted by the nginx target) of one worker host, 1 process, through
               `swarm run --headless`, divided by bare `locust --headless` on the same host with
               the same file, users and time; alternated in one run.
  P5 footprint peak RSS and CPU seconds (user+sys, getrusage of the child) of the `swarm` process
               for each command at the largest N.
"Floor" rows: the same host-side work (bootstrap.sh; starting Locust master + workers) started
directly on the emulated hosts (nsenter, no SSH, no swarm), all at once: what this 2-core machine
needs anyway, whatever the controller does.

Traffic: only 127.0.0.1 (moto) and the lab's 10.77.1.x hosts and bridge (nginx on 10.77.1.1);
an in-process guard refuses anything else. Every loop is bounded in count and time.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from swarm import __version__ as SWARM_VERSION  # noqa: E402  (pure modules: no locust import)
from swarm import locust as L  # noqa: E402
from swarm.remote import tar_bytes  # noqa: E402
from tests.emulation import Lab, install_guard  # noqa: E402
from tests.emulation.ec2 import EmulatedEC2  # noqa: E402

LOCUST_VERSION = dist_version("locust")
RESULTS_JSON = Path(__file__).resolve().parent / "results.json"
RUSAGE = Path(__file__).resolve().parent / "_rusage.py"
STACK = "bench"
RD = "swarm"                      # [bootstrap] remote_dir (default)
WEB_PORT, MASTER_PORT = 8089, 5557
LAB_NETS = ("10.77.0.0/16",)
CMD_TIMEOUT = 600                 # bound on any one swarm command
LOG_TS = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})\]")

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

    def mark(self, needle: str) -> float | None:
        return next((t for t, line in self.marks if needle in line), None)

    def brief(self) -> dict[str, Any]:
        return {"name": self.name, "code": self.code, "wall_s": round(self.wall, 3),
                "cpu_s": round(self.cpu, 3), "rss_mb": round(self.rss_mb, 1),
                "marks": [(round(t, 3), s) for t, s in self.marks]}


class SwarmFailed(RuntimeError):
    pass


# --------------------------------------------------------------------------- sshd + Locust logs

CLK_TCK = os.sysconf("SC_CLK_TCK")


def sshd_cpu_s(host) -> float:
    """CPU seconds of a host's sshd and everything it has run and reaped so far (the SSH
    sessions, their shells, tar, bootstrap.sh): the host-side work of SSH and of what came
    through it. Read from the listener's own and its reaped children's times."""
    total = 0.0
    for pid in host._sshd_listeners():
        try:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in f[11:15]) / CLK_TCK    # utime stime cutime cstime
        except (OSError, ValueError, IndexError):
            pass
    return total


def sshd_counts(host) -> Counter:
    """What the host's sshd logged (LogLevel VERBOSE): connections, logins, exec sessions,
    bytes received from the client (logged when a connection closes)."""
    c: Counter = Counter()
    try:
        text = host.log_path.read_text(errors="replace")
    except OSError:
        return c
    for line in text.splitlines():
        if line.startswith("Connection from "):
            c["tcp"] += 1
        elif line.startswith("Accepted publickey"):
            c["logins"] += 1
        elif line.startswith("Starting session: command"):
            c["execs"] += 1
        elif line.startswith("Starting session: subsystem"):
            c["subsystems"] += 1
        elif line.startswith("Transferred: sent"):
            m = re.search(r"received (\d+) bytes", line)
            if m:
                c["bytes_in"] += int(m.group(1))
    return c


def veth_tx(host) -> int:
    """Bytes the lab bridge sent to this host (everything, all protocols)."""
    try:
        return int(Path(f"/sys/class/net/{host.veth}/statistics/tx_bytes").read_text())
    except (OSError, ValueError):
        return 0


def locust_log(host) -> list[tuple[float, str]]:
    """(unix time, message) of every line of Locust's log on the host."""
    path = host.home / RD / "locust.log"
    out = []
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        m = LOG_TS.match(line)
        if m:
            ts = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").timestamp() + int(m.group(2)) / 1000
            out.append((ts, line[m.end():]))
    return out


def first_ts(lines: list[tuple[float, str]], pattern: str) -> float | None:
    rx = re.compile(pattern)
    return next((ts for ts, msg in lines if rx.search(msg)), None)


def nth_ready_ts(lines: list[tuple[float, str]], n: int) -> float | None:
    return first_ts(lines, rf"reported as ready\. {n} workers connected")


class CpuWatch:
    """CPU seconds used by the Locust processes of one host during a run: polls /proc (5 Hz,
    bounded) and keeps the last utime+stime seen of every process named `locust` in the host's
    PID namespace (a process' counters vanish when it exits; the last 0.2 s are lost)."""

    TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self, host, timeout: float):
        self.host, self.timeout = host, timeout
        self.last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> "CpuWatch":
        self._thread.start()
        return self

    def _loop(self) -> None:
        deadline = time.monotonic() + self.timeout
        for _ in range(int(self.timeout / 0.2) + 1):
            for pid in self.host.pids():
                try:
                    stat = Path(f"/proc/{pid}/stat").read_bytes()
                except OSError:
                    continue
                comm = stat[stat.find(b"(") + 1:stat.rfind(b")")]
                if comm != b"locust":
                    continue
                fields = stat[stat.rfind(b")") + 2:].split()
                self.last[pid] = (int(fields[11]) + int(fields[12])) / self.TICK
            if self._stop.wait(0.2) or time.monotonic() > deadline:
                return

    def stop(self) -> float:
        self._stop.set()
        self._thread.join(10)
        return sum(self.last.values())


# --------------------------------------------------------------------------- nginx target

class Nginx:
    """Debian's nginx on the bridge IP, with its own config, pid and log files in a temp dir."""

    def __init__(self, root: Path, ip: str):
        self.root, self.ip = root, ip
        self.port = self._free_port(ip)
        self.proc: subprocess.Popen | None = None

    @staticmethod
    def _free_port(ip: str) -> int:
        with socket.socket() as s:
            s.bind((ip, 0))
            return s.getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{self.port}"

    def start(self) -> "Nginx":
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.access(nginx, os.X_OK):
            raise SystemExit("bench: nginx not found: run `sh tests/system-deps.sh bench` "
                             "(installs nginx-light)")
        www = self.root / "www"
        www.mkdir(parents=True)
        (www / "index.html").write_text("<html><body>swarm bench</body></html>\n")
        for d in (self.root, www):
            os.chmod(d, 0o755)
        os.chmod(www / "index.html", 0o644)
        temps = "\n".join(f"  {k}_temp_path {self.root}/{k}_temp;"
                          for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        conf = self.root / "nginx.conf"
        conf.write_text(f"""\
worker_processes 1;
daemon off;
pid {self.root}/nginx.pid;
error_log {self.root}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
{temps}
  keepalive_requests 1000000;
  server {{
    listen {self.ip}:{self.port} backlog=4096;
    root {www};
    location = /nginx_status {{ stub_status; }}
    location / {{ }}
  }}
}}
""")
        self.proc = subprocess.Popen([nginx, "-e", str(self.root / "error.log"), "-p", str(self.root),
                                      "-c", str(conf)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)
        deadline = time.monotonic() + 10
        for _ in range(200):
            if self.proc.poll() is not None:
                raise SystemExit(f"bench: nginx exited: {self.proc.stderr.read().decode()[-500:]}")
            try:
                self.requests()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        self.stop()
        raise SystemExit("bench: nginx did not answer within 10s")

    def requests(self) -> int:
        """Requests nginx has handled so far (stub_status; includes this query)."""
        with urllib.request.urlopen(f"{self.url}/nginx_status", timeout=5) as resp:
            text = resp.read().decode()
        return int(text.splitlines()[2].split()[2])

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None


# --------------------------------------------------------------------------- the bench

class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="swarmlab-bench-"))
        os.chmod(self.tmp, 0o755)          # nginx's worker (nobody) serves files under it
        # If the bench is killed hard, tests/run_in_lab.py removes what is registered here.
        reg = os.environ.get("SWARM_LAB_REGISTRY")
        self.reg_entry = Path(reg) / "dirs" / f"bench-{os.getpid()}" if reg else None
        if self.reg_entry is not None and self.reg_entry.parent.is_dir():
            self.reg_entry.write_text(str(self.tmp))
        self.work = self.tmp / "work"
        self.lab: Lab | None = None
        self.ec2: EmulatedEC2 | None = None
        self.nginx: Nginx | None = None
        self.emu_launch: list[float] = []     # seconds moto spent creating emulated hosts
        self.emu_remove: list[float] = []
        self.cycle = 0
        self.state_dir = self.tmp / "state-0"
        self.subnet_id = ""
        self.profile_dir = Path(args.profile_dir).resolve() if args.profile else None
        self.results: dict[str, Any] = {"samples": {}, "commands": []}
        self.load_samples: list[tuple[float, float, float]] = []

    # ---- setup / teardown ----

    def setup(self) -> None:
        self.lab = Lab()
        self.ec2 = EmulatedEC2(self.lab, ready_timeout=60).start()
        orig_add, orig_term = self.lab.add_hosts, self.ec2._on_terminate

        def timed_add(specs, timeout=10.0):
            t = time.monotonic()
            try:
                return orig_add(specs, timeout=timeout)
            finally:
                self.emu_launch.append(time.monotonic() - t)

        def timed_term(ids):
            t = time.monotonic()
            try:
                return orig_term(ids)
            finally:
                self.emu_remove.append(time.monotonic() - t)

        self.lab.add_hosts = timed_add          # instance attributes: only this lab / emulator
        self.ec2._on_terminate = timed_term
        self.nginx = Nginx(self.tmp / "nginx", self.lab.bridge_ip).start()
        self._write_project()

    def close(self) -> None:
        errors = []
        for what, fn in (("nginx", lambda: self.nginx and self.nginx.stop()),
                         ("moto + hosts", lambda: self.ec2 and self.ec2.close()),
                         ("lab", lambda: self.lab and self.lab.close())):
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - keep cleaning
                errors.append(f"{what}: {e}")
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self.reg_entry is not None:
            self.reg_entry.unlink(missing_ok=True)
        for e in errors:
            log(f"cleanup: {e}")

    def _write_project(self) -> None:
        w = self.work
        (w / "locustfiles").mkdir(parents=True)
        (w / "locustfiles" / "light.py").write_text(LIGHT_LOCUSTFILE)
        (w / "locustfiles" / "max.py").write_text(MAX_LOCUSTFILE)
        boot = w / "bootstrap"
        shutil.copytree(REPO / "bootstrap", boot)
        (boot / "bench-bootstrap.sh").write_text(BOOTSTRAP_WRAPPER)
        big = w / "bigboot"              # P3: 200 files, 5 MB, incompressible (worst case)
        big.mkdir()
        (big / "bench-bootstrap.sh").write_text(NOOP_BOOTSTRAP)
        rnd = random.Random(7)
        sizes = [5 * 1024 * 1024 // 199] * 199
        for i, size in enumerate(sizes):
            sub = big / f"d{i % 10}"
            sub.mkdir(exist_ok=True)
            (sub / f"f{i:03d}.bin").write_bytes(rnd.randbytes(size))
        self.big_tar = tar_bytes(big)
        self.big_payload = len(self.big_tar)

    def fresh_stack(self, bootstrap_dir: str = "bootstrap") -> None:
        """Empty moto + no hosts (IPs start at .4 again), a new subnet and state dir."""
        assert self.ec2 is not None
        self.ec2.reset()
        self.subnet_id = self.ec2.make_subnet()
        if self.args.pricing == "deny" and hasattr(self.ec2, "inject"):
            # moto has no Pricing API: it answers 500 and botocore retries for ~6 s. Answer as
            # AWS does for an identity without pricing:GetProducts (fast, not retried) instead.
            self.ec2.inject("GetProducts", "AccessDeniedException", status=400, times=None,
                            message="bench: no pricing in the lab")
        self.cycle += 1
        self.state_dir = self.tmp / f"state-{self.cycle}"
        shutil.rmtree(self.work / "results", ignore_errors=True)
        (self.work / "swarm.toml").write_text(f"""\
[stack]
name = "{STACK}"
provider = "ec2"
[ec2]
region = "us-east-1"
ami = "al2023"
subnet_id = "{self.subnet_id}"
ssh_cidr = "10.77.0.0/16"
connect = "private"
ssh_user = "root"
[locust]
processes = 1
web_port = {WEB_PORT}
master_port = {MASTER_PORT}
[bootstrap]
dir = "{bootstrap_dir}"
script = "bench-bootstrap.sh"
ssh_timeout = 60
""")
        self.load_samples.append(os.getloadavg())

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SWARM_"))}
        env.update(self.ec2.subprocess_env({}))
        env.update(SWARM_STATE_DIR=str(self.state_dir), PYTHONPATH=str(REPO), NO_COLOR="1")
        return env

    # ---- one swarm command ----

    def swarm(self, name: str, *args: str, check: bool = True, timeout: float = CMD_TIMEOUT) -> Cmd:
        argv = [sys.executable, "-m", "swarm", *args]
        if self.profile_dir is not None:
            self.profile_dir.mkdir(parents=True, exist_ok=True)
            stem = self.profile_dir / f"c{self.cycle:02d}-{name.replace(' ', '_')}"
            if self.args.profile == "pyinstrument":
                argv = [sys.executable, "-m", "pyinstrument", "-r", "text", "--show-all",
                        "-o", f"{stem}.txt", "-m", "swarm", *args]
            else:
                spy = Path(sys.executable).parent / "py-spy"
                idle = {"py-spy": ["--idle"], "py-spy-gil": ["--gil"]}.get(self.args.profile, [])
                argv = [str(spy) if spy.exists() else "py-spy", "record", "-r", "200", *idle,
                        "-f", "raw", "-o", f"{stem}.folded", "--", sys.executable, "-m", "swarm", *args]
        usage_file = self.tmp / f"rusage-{len(self.results['commands'])}.json"
        calls0 = len(getattr(self.ec2, "calls", []))
        argv = [sys.executable, "-I", "-S", str(RUSAGE), str(usage_file), "--", *argv]
        marks: list[tuple[float, str]] = []
        out_chunks: list[bytes] = []
        t0w, t0 = time.time(), time.monotonic()
        proc = subprocess.Popen(argv, cwd=self.work, env=self.env(), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)

        def read_err():
            for raw in iter(proc.stderr.readline, b""):
                marks.append((time.monotonic() - t0, raw.decode(errors="replace").rstrip("\n")))

        def read_out():
            out_chunks.append(proc.stdout.read())

        def kill():
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        readers = [threading.Thread(target=read_err, daemon=True),
                   threading.Thread(target=read_out, daemon=True)]
        for r in readers:
            r.start()
        killer = threading.Timer(timeout, kill)
        killer.start()
        try:
            proc.wait()
        except BaseException:
            kill()
            proc.wait()
            raise
        finally:
            killer.cancel()
        wall = time.monotonic() - t0
        for r in readers:
            r.join(10)
        try:
            ru = json.loads(usage_file.read_text())
            usage_file.unlink()
        except (OSError, ValueError):
            ru = {"maxrss_kib": 0, "utime": 0.0, "stime": 0.0, "t0": t0w, "wall": wall}
        # the launcher's own start-up (~20 ms) is not the command's: use its clock
        shift = ru["t0"] - t0w
        t0w, wall = ru["t0"], ru["wall"]
        marks = [(t - shift, line) for t, line in marks]
        cmd = Cmd(name, list(args), proc.returncode, wall, ru["utime"] + ru["stime"],
                  ru["maxrss_kib"] / 1024, t0w, b"".join(out_chunks).decode(errors="replace"),
                  "\n".join(s for _, s in marks), marks)
        api = getattr(self.ec2, "calls", None)
        cmd.api_calls = Counter(a for _, a, _ in api[calls0:]) if api is not None else None
        self.results["commands"].append({"cycle": self.cycle, **cmd.brief(),
                                         "aws_calls": dict(cmd.api_calls or {})})
        if check and cmd.code != 0:
            raise SwarmFailed(f"`swarm {' '.join(args)}` exited {cmd.code} after {wall:.1f}s:\n"
                              f"{cmd.err[-2000:]}\n{cmd.out[-1000:]}")
        return cmd

    def sample(self, metric: str, n: int | str, value: Any) -> None:
        self.results["samples"].setdefault(metric, {}).setdefault(str(n), []).append(value)

    # ---- hosts ----

    def hosts_by_ip(self) -> dict[str, Any]:
        return {h.ip: h for h in self.ec2.hosts.values()}

    def nsenter_all(self, hosts: list, cmds: list[str], timeout: float = 300) -> list:
        """Run one shell command per host, all at once, directly inside the hosts (no SSH)."""
        with ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
            return list(pool.map(lambda hc: hc[0].exec(hc[1], timeout=timeout), zip(hosts, cmds)))

    def master_stats(self, master) -> dict[str, Any]:
        res = master.exec(L.stats_url_cmd(WEB_PORT), timeout=20)
        try:
            return json.loads(res.stdout)
        except json.JSONDecodeError:
            return {}

    def wait_log(self, host, pred: Callable[[list], float | None], timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.05) + 1):
            ts = pred(locust_log(host))
            if ts is not None or time.monotonic() > deadline:
                return ts
            time.sleep(0.05)
        return None

    def wait_warm(self, hosts: list, since: float, timeout: float) -> float | None:
        """Seconds from `since` (wall clock) until every host's warm Locust has imported Locust
        (its warm.ready file), or None if one has not within timeout."""
        files = [h.home / RD / "warm.ready" for h in hosts]
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.05) + 1):
            try:
                return max(f.stat().st_mtime for f in files) - since
            except OSError:
                if time.monotonic() > deadline:
                    log(f"warning: no warm Locust on some host after {timeout:.0f}s")
                    return None
                time.sleep(0.05)
        return None

    def kill_locust(self, hosts: list) -> None:
        self.nsenter_all(hosts, [L.kill_cmd(RD)] * len(hosts), timeout=60)

    # ---- P1, P2, P5: one full cycle at N workers ----

    def cycle_run(self, n: int) -> None:
        log(f"cycle N={n}: up master, up workers, run (UI), run (headless), status, killall, down")
        self.fresh_stack("bootstrap")
        try:
            self._cycle_run(n)
        finally:
            self.swarm("down", "down", check=False, timeout=300)

    def _cycle_run(self, n: int) -> None:
        big_n = n == max(self.args.sizes)
        up_m = self.swarm("up master", "up", "master")
        (master,) = list(self.hosts_by_ip().values())
        # The master's warm Locust imports once `up master` has exited: let it finish, as it
        # would on its own CPU on EC2, rather than compete with `up workers` here.
        self.wait_warm([master], since=up_m.t0 + up_m.wall, timeout=180)
        emu0 = len(self.emu_launch)
        up_w = self.swarm("up workers", "up", "workers", "-n", str(n))
        emu = sum(self.emu_launch[emu0:])
        workers = [h for ip, h in sorted(self.hosts_by_ip().items(),
                                         key=lambda kv: tuple(int(x) for x in kv[0].split(".")))
                   if h is not master]
        assert len(workers) == n, (len(workers), n)
        t_launch, t_boot = up_w.mark("launching"), up_w.mark("bootstrapping")
        self.sample("P1_up_workers_s", n, up_w.wall)
        self.sample("P1_emulated_launch_s", n, emu)
        self.sample("P1_net_of_emulation_s", n, up_w.wall - emu)
        self.sample("P1_phase_start_s", n, t_launch)
        self.sample("P1_phase_launch_s", n, (t_boot - t_launch) if t_boot and t_launch else None)
        self.sample("P1_phase_bootstrap_s", n, (up_w.wall - t_boot) if t_boot else None)
        counts = [sshd_counts(h) for h in workers]
        self.sample("P1_ssh_per_host", n, _per_host(counts))
        # `up` leaves a warm Locust importing on every host once it has exited (what makes the
        # next `run` start at once). Wait for it, so that it neither slows the floors below nor
        # hides in P2; its time is reported.
        warm = self.wait_warm([master, *workers], since=up_w.t0 + up_w.wall, timeout=180)
        self.sample("P1_warm_ready_after_up_s", n, warm)
        # the sessions have ended and been reaped once `up` has exited (the warm Locusts are
        # not under sshd: they are the host's init's)
        self.sample("P1_hosts_sshd_cpu_s", n, sum(sshd_cpu_s(h) for h in workers))

        # floor: the same bootstrap.sh, directly on every worker at once
        env = (f"SWARM_LOCUST_VERSION={LOCUST_VERSION} SWARM_ROLE=worker SWARM_STACK={STACK} "
               f"SWARM_REMOTE_DIR={RD}")
        t = time.monotonic()
        res = self.nsenter_all(workers, [f"cd {RD} && {env} bash bootstrap/bench-bootstrap.sh "
                                         ">floor-bootstrap.log 2>&1"] * n)
        self.sample("P1_floor_bootstrap_s", n, time.monotonic() - t)
        if any(r.returncode for r in res):
            log(f"warning: floor bootstrap failed on {sum(1 for r in res if r.returncode)} host(s)")

        # P2, UI mode: swarm returns once every worker is connected
        target = self.nginx.url
        ssh0 = {h.ip: sshd_counts(h) for h in [master, *workers]}
        run_ui = self.swarm("run (UI)", "run", "-H", target, "-f", "light.py", "-u", str(n), "-r", str(n))
        stats = self.master_stats(master)
        if int(stats.get("worker_count", -1)) != n:
            raise SwarmFailed(f"after `swarm run` the master reports {stats.get('worker_count')} "
                              f"workers, expected {n}")
        ready = nth_ready_ts(locust_log(master), n)
        self.sample("P2_run_ui_s", n, run_ui.wall)
        self.sample("P2_ui_all_connected_s", n, ready - run_ui.t0 if ready else None)
        self.sample("P2_phase_start_s", n, run_ui.mark("syncing"))
        sync, start, conn = run_ui.mark("syncing"), run_ui.mark("starting Locust"), run_ui.mark("connected")
        self.sample("P2_phase_sync_s", n, (start - sync) if sync and start else None)
        self.sample("P2_phase_wait_workers_s", n, (conn - start) if conn and start else None)
        self.sample("P2_ssh_per_host", n, _per_host([sshd_counts(h) - ssh0[h.ip] for h in workers]))
        self.sample("P2_ssh_master", n, dict(sshd_counts(master) - ssh0[master.ip]))
        kill = self.swarm("killall", "killall")
        self.sample("killall_s", n, kill.wall)

        # floors: the same start commands, directly on the hosts, all at once: forked by the
        # warm Locust as swarm does, then cold (a new `locust` process importing Locust)
        spec = L.RunSpec(locustfile="light.py", host=target, users=n, spawn_rate=n, run_time=None,
                         headless=False, expect_workers=n, master_port=MASTER_PORT, web_port=WEB_PORT)
        for key, warm in (("P2_floor_all_connected_s", True), ("P2_floor_cold_all_connected_s", False)):
            cmds = [L.start_cmd(RD, L.master_argv(spec), fresh_results=True, warm=warm)]
            cmds += [L.start_cmd(RD, L.worker_argv("light.py", master.ip, MASTER_PORT, 1), warm=warm)] * n
            t0w = time.time()
            self.nsenter_all([master, *workers], cmds, timeout=60)
            ready = self.wait_log(master, lambda lines: nth_ready_ts(lines, n), timeout=120)
            self.sample(key, n, ready - t0w if ready else None)
            t = time.monotonic()
            self.kill_locust([master, *workers])
            if warm:
                self.sample("killall_floor_s", n, time.monotonic() - t)

        # P2, headless: from invoking swarm to the master sending spawn jobs to all N workers
        head = self.swarm("run (headless)", "run", "-H", target, "-f", "light.py", "--headless",
                          "-u", str(n), "-r", str(n), "-t", "3s")
        lines = locust_log(master)   # the master's log stays on the host after the run
        spawn = first_ts(lines, rf"Sending spawn jobs of \d+ users at [\d.]+ spawn rate to {n} ready workers")
        ready = nth_ready_ts(lines, n)
        end = first_ts(lines, r"--run-time limit reached|Time limit reached|Shutting down")
        self.sample("P2_headless_started_s", n, spawn - head.t0 if spawn else None)
        self.sample("P2_headless_connected_s", n, ready - head.t0 if ready else None)
        self.sample("P2_headless_end_to_exit_s", n, (head.t0 + head.wall - end) if end else None)
        # where the end goes: Locust's --autoquit, Locust exiting, swarm noticing + fetching
        quit_ts = first_ts(lines, r"--autoquit time reached")
        try:
            exit_ts = (master.home / RD / "locust.exit").stat().st_mtime
        except OSError:
            exit_ts = None
        if end and quit_ts and exit_ts:
            self.sample("P2_headless_end_phases_s", n, {
                "autoquit": quit_ts - end, "locust_exit": exit_ts - quit_ts,
                "swarm_after_exit": head.t0 + head.wall - exit_ts})
        self.sample("P2_headless_total_s", n, head.wall)

        status = self.swarm("status", "status", "--json")
        kill2 = self.swarm("killall (after headless)", "killall")
        emr0 = len(self.emu_remove)
        down = self.swarm("down", "down", timeout=300)
        emu_rm = sum(self.emu_remove[emr0:])
        self.sample("down_s", n, down.wall)
        self.sample("down_net_of_emulation_s", n, down.wall - emu_rm)
        if big_n:
            for c in (up_m, up_w, run_ui, kill, head, status, kill2, down):
                self.sample(f"P5 {c.name}", n, {"rss_mb": c.rss_mb, "cpu_s": c.cpu,
                                                "cpu_per_host_s": c.cpu / (n + 1), "wall_s": c.wall,
                                                "aws_calls": sum((c.api_calls or {}).values())})

    # ---- P3: upload of a 200-file, 5 MB bootstrap/ ----

    def cycle_upload(self, n: int) -> None:
        log(f"cycle N={n}: 5 MB bootstrap/ upload")
        self.fresh_stack("bigboot")
        try:
            up_m = self.swarm("up master", "up", "master")
            (master,) = list(self.hosts_by_ip().values())
            self.wait_warm([master], since=up_m.t0 + up_m.wall, timeout=180)
            up_w = self.swarm("up workers (5 MB)", "up", "workers", "-n", str(n))
            workers = [h for h in self.hosts_by_ip().values() if h is not master]
            # The warm Locusts import after `up` exits: not during the floors below. (Their
            # connections close as `up` exits, so sshd has logged "Transferred: ..." by then.)
            self.wait_warm(workers, since=up_w.t0 + up_w.wall, timeout=180)
            self.sample("P3_hosts_sshd_cpu_s", n, sum(sshd_cpu_s(h) for h in workers))
            boot = up_w.mark("bootstrapping")
            self.sample("P3_bootstrap_phase_s", n, (up_w.wall - boot) if boot else None)
            self.sample("P3_up_workers_s", n, up_w.wall)
            per = _per_host([sshd_counts(h) for h in workers])
            per["veth_bytes_to_host"] = median([veth_tx(h) for h in workers])
            per["payload_bytes"] = self.big_payload
            self.sample("P3_ssh_per_host", n, per)
            self._upload_floors(n, workers)
            if n == max(self.args.sizes):
                self.sample("P5 up workers (5 MB)", n, {"rss_mb": up_w.rss_mb, "cpu_s": up_w.cpu,
                                                        "cpu_per_host_s": up_w.cpu / (n + 1),
                                                        "wall_s": up_w.wall,
                                                        "aws_calls": sum((up_w.api_calls or {}).values())})
        finally:
            self.swarm("down", "down", check=False, timeout=300)

    def _upload_floors(self, n: int, workers: list) -> None:
        """The same tar unpacked + the same script on every host at once: directly (nsenter:
        the hosts' own work) and through OpenSSH's `ssh` client (one process per host)."""
        from swarm.remote import replace_tree_cmd
        for h in workers:
            (h.home / "bench-payload.tgz").write_bytes(self.big_tar)
        cmd = (f"{replace_tree_cmd(f'{RD}/floor-boot')} <bench-payload.tgz && "
               f"cd {RD} && bash floor-boot/bench-bootstrap.sh >/dev/null")
        t = time.monotonic()
        res = self.nsenter_all(workers, [cmd] * n)
        self.sample("P3_floor_untar_s", n, time.monotonic() - t)
        if any(r.returncode for r in res):
            log(f"warning: upload floor failed on {sum(1 for r in res if r.returncode)} host(s)")
        for h in workers:
            (h.home / "bench-payload.tgz").unlink(missing_ok=True)
        ssh = shutil.which("ssh")
        key = self.state_dir / "ec2" / "us-east-1" / STACK / "id_swarm"
        if not ssh or not key.is_file():
            return
        remote = (f"{replace_tree_cmd(f'{RD}/ossh-boot')} && cd {RD} && "
                  f"bash ossh-boot/bench-bootstrap.sh >/dev/null")

        def one(h):
            return subprocess.run([ssh, "-i", str(key), "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
                                   "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                                   "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=20", f"root@{h.ip}", remote],
                                  input=self.big_tar, capture_output=True, timeout=300).returncode

        t = time.monotonic()
        with ThreadPoolExecutor(max_workers=n) as pool:
            codes = list(pool.map(one, workers))
        self.sample("P3_floor_openssh_s", n, time.monotonic() - t)
        if any(codes):
            log(f"warning: OpenSSH upload failed on {sum(1 for c in codes if c)} host(s)")

    # ---- P4: requests/s of one worker process, swarm vs bare Locust ----

    def cycle_per_core(self) -> None:
        users, secs, reps = self.args.p4_users, self.args.p4_seconds, self.args.reps
        log(f"P4: one worker host, 1 process, {users} users, {secs}s: swarm, bare locust, locust "
            f"distributed without swarm, x{reps}")
        self.fresh_stack("bootstrap")
        try:
            self.swarm("up master", "up", "master")
            (master,) = list(self.hosts_by_ip().values())
            self.swarm("up workers", "up", "workers", "-n", "1")
            (worker,) = [h for h in self.hosts_by_ip().values() if h is not master]
            # the first run is swarm's: it ships locustfiles/, so the bare run uses the same file
            # swarm; bare = one standalone `locust --headless`; dist = Locust's own distributed
            # mode (the same master + worker, started on the hosts without swarm)
            order: list[str] = []
            for i in range(reps):           # rotated, so no kind always runs first or last
                order += [["swarm", "bare", "dist"], ["bare", "dist", "swarm"],
                          ["dist", "swarm", "bare"]][i % 3]
            for kind in order:
                before = self.nginx.requests()
                watch = CpuWatch(worker, timeout=secs + 180).start()
                if kind == "swarm":
                    c = self.swarm("run (P4)", "run", "-H", self.nginx.url, "-f", "max.py", "--headless",
                                   "-u", str(users), "-r", str(users), "-t", f"{secs}s")
                    res_dir = next((line.split("results:", 1)[1].strip() for _, line in c.marks
                                    if line.startswith("results:")), None)
                    csv = (self.work / res_dir / "locust_stats.csv") if res_dir else None
                elif kind == "dist":
                    mcmd = (f"cd {RD} && rm -rf dist && mkdir dist && locust -f locustfiles/max.py "
                            f"--master --master-bind-port {MASTER_PORT} --headless -u {users} -r {users} "
                            f"-t {secs}s -H {self.nginx.url} --expect-workers 1 --csv dist/locust "
                            f"--only-summary >dist/locust.log 2>&1")
                    wcmd = L.start_cmd(RD, L.worker_argv("max.py", master.ip, MASTER_PORT, 1))
                    with ThreadPoolExecutor(max_workers=2) as pool:
                        mres = pool.submit(master.exec, mcmd, timeout=secs + 120)
                        pool.submit(worker.exec, wcmd, timeout=60).result()
                        if mres.result().returncode != 0:
                            raise SwarmFailed("distributed locust failed: " + (
                                master.home / RD / "dist" / "locust.log").read_text()[-800:])
                    csv = master.home / RD / "dist" / "locust_stats.csv"
                else:
                    cmd = (f"cd {RD} && rm -rf bare && mkdir bare && locust -f locustfiles/max.py "
                           f"--headless -u {users} -r {users} -t {secs}s -H {self.nginx.url} "
                           f"--csv bare/locust --only-summary >bare/locust.log 2>&1")
                    r = worker.exec(cmd, timeout=secs + 120)
                    if r.returncode != 0:
                        raise SwarmFailed(f"bare locust failed ({r.returncode}): "
                                          f"{(worker.home / RD / 'bare' / 'locust.log').read_text()[-800:]}")
                    csv = worker.home / RD / "bare" / "locust_stats.csv"
                served = self.nginx.requests() - before - 1
                cpu = watch.stop()
                loc = L.parse_stats_csv(csv.read_text()) if csv and csv.is_file() else None
                self.sample("P4_rps_nginx", kind, served / secs)
                self.sample("P4_cpu_s", kind, cpu)
                self.sample("P4_req_per_cpu_s", kind, served / cpu if cpu > 0 else None)
                self.sample("P4_rps_locust", kind, loc.total.rps if loc else None)
                self.sample("P4_failures", kind, loc.total.failures if loc else None)
        finally:
            self.swarm("down", "down", check=False, timeout=300)

    # ---- the whole thing ----

    def run(self) -> None:
        only = self.args.only
        t_start = time.monotonic()
        failures = self.results.setdefault("failures", [])

        def attempt(what: str, fn: Callable[[], None]) -> None:
            # One failed cycle (swarm changes under our feet) is recorded, not fatal: the other
            # cycles still measure, and the exit code says something failed.
            try:
                fn()
            except (SwarmFailed, AssertionError, OSError, subprocess.SubprocessError) as e:
                failures.append({"cycle": self.cycle, "what": what, "error": str(e)[-3000:]})
                log(f"FAILED {what}: {str(e)[-1500:]}")

        try:
            for rep in range(self.args.reps):
                for n in self.args.sizes:
                    if {"P1", "P2", "P5"} & only:
                        attempt(f"run cycle N={n}", lambda: self.cycle_run(n))
                    if "P3" in only:
                        attempt(f"upload cycle N={n}", lambda: self.cycle_upload(n))
                log(f"repetition {rep + 1}/{self.args.reps} done after "
                    f"{time.monotonic() - t_start:.0f}s")
            if "P4" in only:
                attempt("P4", self.cycle_per_core)
        finally:
            self.results["bench_runtime_s"] = round(time.monotonic() - t_start, 1)


def _per_host(counts: list[Counter]) -> dict[str, float]:
    keys = ("tcp", "logins", "execs", "subsystems", "bytes_in")
    out = {}
    for k in keys:
        vals = [c.get(k, 0) for c in counts]
        out[k] = median(vals) if vals else 0
        out[f"{k}_max"] = max(vals) if vals else 0
    return out


# --------------------------------------------------------------------------- report

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


def summarize(b: Bench, args) -> dict[str, Any]:
    s = b.results["samples"]
    med = {m: {n: _med(v) for n, v in per.items()} for m, per in s.items()}
    sizes = [str(n) for n in args.sizes]
    lo, hi = sizes[0], sizes[-1]
    mid = "10" if "10" in sizes else (sizes[1] if len(sizes) > 2 else hi)

    def g(metric, n):
        return med.get(metric, {}).get(n)

    goals = []

    def goal(name, desc, value, limit, ok, note=""):
        goals.append({"goal": name, "target": desc, "value": value, "limit": limit,
                      "ok": (bool(ok) if value is not None else None), "note": note})

    if "P1" in args.only:
        a, z = g("P1_up_workers_s", hi), g("P1_up_workers_s", lo)
        r = a / z if a and z else None
        # What N=hi needs here whatever the controller does next: its start (as at N=lo), moto
        # creating the hosts, bootstrap.sh on all of them. Above the limit, no controller can
        # meet the goal on this machine.
        parts = [g("P1_phase_start_s", hi), g("P1_emulated_launch_s", hi), g("P1_floor_bootstrap_s", hi)]
        bound = sum(parts) if None not in parts and z else None
        goal("P1", f"up workers: N={hi} <= 1.3 x N={lo}", r, 1.3, r is not None and r <= 1.3,
             _bound_note(hi, bound, 1.3 * z if z else None, "start + moto creating hosts + bootstrap.sh floor"))
        a, z = g("P1_net_of_emulation_s", hi), g("P1_net_of_emulation_s", lo)
        r = a / z if a and z else None
        goal("P1'", "same, minus moto's emulated-host creation", r, 1.3, r is not None and r <= 1.3,
             "real EC2 boots N instances in parallel; the lab creates namespaces in series")
        a, z = g("P1_net_of_emulation_s", hi), g("P1_net_of_emulation_s", lo)
        fa, fz = g("P1_floor_bootstrap_s", hi), g("P1_floor_bootstrap_s", lo)
        r = (a - fa) / (z - fz) if None not in (a, z, fa, fz) and z - fz > 0 else None
        goal("P1''", "same, minus also the hosts' own bootstrap.sh time (floor)", r, 1.3,
             r is not None and r <= 1.3, "what the controller adds; the lab's 2 cores run every host")
    if "P2" in args.only:
        for n, lim in ((mid, 2.0), (hi, 3.0)):
            v = g("P2_run_ui_s", n)
            goal("P2", f"run (UI) at N={n} <= {lim:g} s", v, lim, v is not None and v <= lim,
                 f"floors on this machine: warm {_fmt(g('P2_floor_all_connected_s', n))} s, "
                 f"cold {_fmt(g('P2_floor_cold_all_connected_s', n))} s")
    if "P3" in args.only:
        a, z = g("P3_bootstrap_phase_s", hi), g("P3_bootstrap_phase_s", lo)
        r = a / z if a and z else None
        goal("P3", f"5 MB bootstrap: N={hi} <= 2 x N={lo}", r, 2.0, r is not None and r <= 2.0,
             _bound_note(hi, g("P3_floor_untar_s", hi), 2.0 * z if z else None,
                         "the hosts unpacking the same tar, no SSH"))
        fa, fz = g("P3_floor_untar_s", hi), g("P3_floor_untar_s", lo)
        oa, oz = g("P3_floor_openssh_s", hi), g("P3_floor_openssh_s", lo)
        r = (a - fa) / (z - fz) if None not in (a, z, fa, fz) and z - fz > 0 else None
        ro = (oa - fa) / (oz - fz) if None not in (oa, oz, fa, fz) and oz - fz > 0 else None
        goal("P3''", "same, minus the hosts' own unpacking (floor)", r, 2.0, r is not None and r <= 2.0,
             f"OpenSSH's ssh, same measure: {_fmt(ro)}")
        per = (s.get("P3_ssh_per_host", {}).get(hi) or [None])[-1]
        if per:
            ratio = per["bytes_in"] / per["payload_bytes"] if per["payload_bytes"] else None
            ok = per["logins_max"] <= 1 and ratio is not None and ratio < 1.5
            goal("P3'", "one SSH connection and one copy of the data per host",
                 f"{per['logins_max']:g} conn, {per['execs']:g} execs, {ratio:.2f}x payload" if ratio else None,
                 "1 conn, 1x", ok)
    if "P4" in args.only:
        a, z = g("P4_req_per_cpu_s", "swarm"), g("P4_req_per_cpu_s", "bare")
        r = a / z if a and z else None
        a2, z2 = g("P4_rps_nginx", "swarm"), g("P4_rps_nginx", "bare")
        r2 = a2 / z2 if a2 and z2 else None
        a3 = g("P4_req_per_cpu_s", "dist")
        r3 = a3 / z if a3 and z else None
        goal("P4", "requests per CPU-second of the worker process, swarm / bare >= 0.95", r, 0.95,
             r is not None and r >= 0.95,
             f"requests/s, swarm / bare: {_fmt(r2)}; Locust distributed without swarm / bare: "
             f"{_fmt(r3)} per CPU-second")
    p5 = {m: v for m, v in s.items() if m.startswith("P5 ")}
    if p5:
        worst_rss = max(_med([x["rss_mb"] for x in v[hi]]) for v in p5.values() if hi in v)
        worst_cpu = max(_med([x["cpu_per_host_s"] for x in v[hi]]) for v in p5.values() if hi in v)
        goal("P5", f"peak RSS of any command at N={hi} <= 150 MB", worst_rss, 150, worst_rss <= 150)
        goal("P5'", f"CPU per host of any command at N={hi} <= 0.1 s", worst_cpu, 0.1, worst_cpu <= 0.1)
    return {"medians": med, "goals": goals}


def _bound_note(n: str, bound: float | None, limit_s: float | None, what: str) -> str:
    """Whether this machine can meet a ratio goal at all: what the largest N needs without
    the controller's own work, against the goal's limit in seconds."""
    if bound is None or limit_s is None:
        return ""
    verdict = "out of reach on this machine" if bound > limit_s else "within reach"
    return f"N={n} needs {bound:.2f} s here besides swarm's SSH work ({what}); limit {limit_s:.2f} s: {verdict}"


def _med(v):
    if not v:
        return None
    if isinstance(v[0], dict):
        keys = v[0].keys()
        return {k: median([x.get(k) for x in v if isinstance(x.get(k), (int, float))]) for k in keys}
    return median([x for x in v if isinstance(x, (int, float))])


def _fmt(x, nd=2) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def print_table(b: Bench, summary: dict[str, Any], args) -> None:
    med = summary["medians"]
    sizes = [str(n) for n in args.sizes]
    rows = [
        ("P1 up workers -n N (s)", "P1_up_workers_s"),
        ("   of which moto creating emulated hosts", "P1_emulated_launch_s"),
        ("   phases: start / launch / bootstrap", ("P1_phase_start_s", "P1_phase_launch_s", "P1_phase_bootstrap_s")),
        ("   floor: bootstrap.sh on all hosts, no SSH", "P1_floor_bootstrap_s"),
        ("   warm Locust ready on all, after up exits", "P1_warm_ready_after_up_s"),
        ("   hosts' CPU-s under sshd (SSH + bootstrap.sh)", "P1_hosts_sshd_cpu_s"),
        ("P2 run, UI mode, until all connected (s)", "P2_run_ui_s"),
        ("   phases: start / sync+kill / start+wait", ("P2_phase_start_s", "P2_phase_sync_s", "P2_phase_wait_workers_s")),
        ("   floor: warm Locust started on hosts, no SSH", "P2_floor_all_connected_s"),
        ("   floor: cold Locust (imports), no SSH", "P2_floor_cold_all_connected_s"),
        ("P2 run --headless, until spawn sent to all (s)", "P2_headless_started_s"),
        ("   end of load -> swarm exits with results", "P2_headless_end_to_exit_s"),
        ("killall of a running stack (s)", "killall_s"),
        ("   floor: the same kill command, no SSH", "killall_floor_s"),
        ("P3 5 MB bootstrap/: bootstrap phase (s)", "P3_bootstrap_phase_s"),
        ("   floor: unpack + script on hosts, no SSH", "P3_floor_untar_s"),
        ("   the same through OpenSSH's ssh, in parallel", "P3_floor_openssh_s"),
        ("   hosts' CPU-s under sshd (SSH + unpacking)", "P3_hosts_sshd_cpu_s"),
        ("down (s) / net of emulated host removal", ("down_s", "down_net_of_emulation_s")),
    ]
    w, cw = 48, 22
    print()
    print(f"{'metric (median of ' + str(args.reps) + ')':<{w}}" + "".join(f"{'N=' + n:>{cw}}" for n in sizes))
    print("-" * (w + cw * len(sizes)))
    for label, key in rows:
        keys = key if isinstance(key, tuple) else (key,)
        if not any(k in med for k in keys):
            continue
        cells = []
        for n in sizes:
            vals = [med.get(k, {}).get(n) for k in keys]
            cells.append(" / ".join(_fmt(v) for v in vals))
        print(f"{label:<{w}}" + "".join(f"{c:>{cw}}" for c in cells))
        if keys == ("P2_headless_end_to_exit_s",) and "P2_headless_end_phases_s" in med:
            cells = []
            for n in sizes:
                d = med["P2_headless_end_phases_s"].get(n) or {}
                cells.append(" / ".join(_fmt(d.get(k)) for k in ("autoquit", "locust_exit",
                                                                 "swarm_after_exit")))
            print(f"{'   = autoquit / Locust exits / swarm after':<{w}}"
                  + "".join(f"{c:>{cw}}" for c in cells))
    for label, ka, kb in (("P1 bootstrap phase minus its floor", "P1_phase_bootstrap_s", "P1_floor_bootstrap_s"),
                        ("P2 run (UI) minus its floor", "P2_run_ui_s", "P2_floor_all_connected_s"),
                        ("P3 bootstrap phase minus its floor", "P3_bootstrap_phase_s", "P3_floor_untar_s")):
        if ka in med and kb in med:
            cells = [_fmt(med[ka][n] - med[kb][n])
                     if med[ka].get(n) is not None and med[kb].get(n) is not None else "-"
                     for n in sizes]
            print(f"{label:<{w}}" + "".join(f"{c:>{cw}}" for c in cells))
    for key, label in (("P1_ssh_per_host", "P1 per worker: conns/logins/execs"),
                       ("P2_ssh_per_host", "P2 per worker: conns/logins/execs"),
                       ("P3_ssh_per_host", "P3 per worker: conns/logins/execs/MB in")):
        if key in med:
            cells = []
            for n in sizes:
                d = med[key].get(n)
                if not d:
                    cells.append("-")
                    continue
                c = f"{d['tcp']:g}/{d['logins']:g}/{d['execs']:g}"
                if key == "P3_ssh_per_host":
                    c += f"/{d['bytes_in'] / 1e6:.1f}"
                cells.append(c)
            print(f"{label:<{w}}" + "".join(f"{c:>{cw}}" for c in cells))
    if "P4_rps_nginx" in med:
        m = med["P4_rps_nginx"]
        ml = med.get("P4_rps_locust", {})
        mc = med.get("P4_req_per_cpu_s", {})
        kinds = ("swarm", "bare", "dist")
        print(f"{'P4 1 worker process':<{w}}{'swarm':>{cw}}{'bare locust':>{cw}}{'locust dist, no swarm':>{cw}}")
        for label, d, nd in (("   requests/s (counted by nginx)", m, 0),
                             ("   requests/s (as Locust counts them)", ml, 0),
                             ("   requests per CPU-second of the process", mc, 0)):
            print(f"{label:<{w}}" + "".join(f"{_fmt(d.get(k), nd):>{cw}}" for k in kinds))
    p5 = [(k[3:], v) for k, v in med.items() if k.startswith("P5 ")]
    if p5:
        hi = sizes[-1]
        print(f"\nP5 footprint of the swarm process at N={hi} (median of {args.reps})")
        print(f"   {'command':<28}{'peak RSS MB':>12}{'CPU s':>8}{'CPU s/host':>12}{'wall s':>8}{'AWS calls':>11}")
        for name, per in p5:
            d = per.get(hi) or {}
            print(f"   {name:<28}{_fmt(d.get('rss_mb'), 1):>12}{_fmt(d.get('cpu_s')):>8}"
                  f"{_fmt(d.get('cpu_per_host_s'), 3):>12}{_fmt(d.get('wall_s')):>8}"
                  f"{_fmt(d.get('aws_calls'), 0):>11}")
    print("\ngoals:")
    for gl in summary["goals"]:
        mark = {True: "PASS", False: "MISS", None: "n/a "}[gl["ok"]]
        v = gl["value"]
        vs = _fmt(v, 2) if not isinstance(v, str) else v
        note = f"  ({gl['note']})" if gl["note"] else ""
        print(f"  {mark}  {gl['goal']:<4} {gl['target']}: {vs} (limit {gl['limit']}){note}")
    la = b.load_samples
    if la:
        print(f"\nmachine: {os.cpu_count()} CPUs; 1-min load average before each cycle: "
              f"min {min(x[0] for x in la):.2f}, median {median([x[0] for x in la]):.2f}, "
              f"max {max(x[0] for x in la):.2f}")


# --------------------------------------------------------------------------- main

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


def parse_args(argv: list[str]):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=3, help="repetitions of every figure (median)")
    p.add_argument("--sizes", default="1,10,30", help="numbers of worker hosts")
    p.add_argument("--only", default="P1,P2,P3,P4,P5", help="which of P1..P5 to measure")
    p.add_argument("--quick", action="store_true", help="smoke run: --reps 1 --sizes 1,3, short P4")
    p.add_argument("--p4-users", type=int, default=10)
    p.add_argument("--p4-seconds", type=int, default=10)
    p.add_argument("--profile", choices=("pyinstrument", "py-spy", "py-spy-cpu", "py-spy-gil"),
                   help="run every swarm command under a profiler (timings are then not goals)")
    p.add_argument("--profile-dir", default="bench/profiles")
    p.add_argument("--pricing", choices=("deny", "moto"), default="deny",
                   help="Pricing API: 'deny' answers AccessDenied at once (default); 'moto' leaves "
                        "moto's 500s, which botocore retries")
    p.add_argument("--output", default=str(RESULTS_JSON))
    a = p.parse_args(argv)
    if a.quick:
        a.reps, a.sizes, a.p4_seconds = 1, "1,3", 4
    a.sizes = sorted({int(x) for x in str(a.sizes).split(",") if x.strip()})
    a.only = {x.strip().upper() for x in a.only.split(",") if x.strip()}
    if a.reps < 1 or not a.sizes or a.sizes[0] < 1 or a.sizes[-1] > 200:
        p.error("--reps >= 1 and sizes between 1 and 200")
    return a


def report(path: str) -> int:
    """Print the table of an earlier run from its results.json."""
    doc = json.loads(Path(path).read_text())
    st = doc["settings"]
    args = argparse.Namespace(reps=st["reps"], sizes=st["sizes"], only=set(st["only"]))
    holder = argparse.Namespace(load_samples=[tuple(x) for x in doc.get("load_avg_per_cycle", [])])
    summary = {"medians": doc["medians"], "goals": doc["goals"]}
    print_table(holder, summary, args)
    m = doc.get("machine", {})
    print(f"\nran {doc.get('started_at')} on {m.get('cpus')}x {m.get('cpu_model')}, {m.get('os')}, "
          f"Python {m.get('python')}, Locust {m.get('locust')}, swarm {m.get('swarm')} ({m.get('git')})")
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["--report"]:
        return report(argv[1] if len(argv) > 1 else str(RESULTS_JSON))
    args = parse_args(argv)
    why = preflight()
    if why:
        log(why)
        return 2
    if not os.environ.get("SWARM_LAB"):
        log("not inside tests/run_in_lab.py: only the in-process guard keeps traffic home")

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)     # moto's server: one line a request
    uninstall = install_guard(LAB_NETS)
    bench = Bench(args)
    started = datetime.now().astimezone().isoformat(timespec="seconds")
    load_before = os.getloadavg()
    rc = 0
    try:
        bench.setup()
        bench.run()
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        rc = 130
    finally:
        bench.close()
        uninstall()
    if rc == 130:
        return rc
    if bench.results.get("failures"):
        rc = 1
    summary = summarize(bench, args)
    doc = {"started_at": started, "machine": machine_info(),
           "load_avg_before": load_before, "load_avg_after": os.getloadavg(),
           "load_avg_per_cycle": bench.load_samples,
           "settings": {"reps": args.reps, "sizes": args.sizes, "only": sorted(args.only),
                        "p4_users": args.p4_users, "p4_seconds": args.p4_seconds,
                        "profile": args.profile, "pricing": args.pricing},
           "goals": summary["goals"], "medians": summary["medians"], **bench.results}
    out = Path(args.output)
    out.write_text(json.dumps(doc, indent=1, default=str))
    print_table(bench, summary, args)
    for f in bench.results.get("failures", []):
        print(f"FAILED: {f['what']}: {f['error'].strip().splitlines()[-1] if f['error'].strip() else '?'}")
    print(f"\nbench: wrote {out} ({bench.results.get('bench_runtime_s', '?')} s of measuring)")
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
