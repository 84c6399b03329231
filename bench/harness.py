"""The bench's state across cycles, and what every measure does with it: the lab, moto and the
nginx target; a fresh stack per cycle; running one swarm command as a user does (its wall, CPU,
peak RSS, progress lines and AWS calls recorded); reaching the emulated hosts without swarm."""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from common import (
    BOOTSTRAP_WRAPPER,
    CMD_TIMEOUT,
    LIGHT_LOCUSTFILE,
    MASTER_PORT,
    MAX_LOCUSTFILE,
    NOOP_BOOTSTRAP,
    RD,
    REPO,
    RUSAGE,
    STACK,
    WEB_PORT,
    Cmd,
    SwarmFailed,
    locust_shell,
    log,
    tar_bytes,
)
from link import link_tx, unshape
from probes import controller_counts, locust_log
from target import Nginx

# after `common`, which puts the repository on sys.path
from tests.emulation import Lab
from tests.emulation.ec2 import EmulatedEC2


class Bench:
    """One bench run. The measures are functions of it, one module per group (bringup, start,
    upload, per_core, footprint); bench.py runs them in order."""

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
        self._born: dict[str, Counter] = {}   # ip -> sshd counts when the lab created it
        self._gone: dict[str, Counter] = {}   # ip -> sshd counts just before it was removed
        self.shaped: str | None = None        # the bridge while uplink.shaped() holds a qdisc on it

    # ---- setup / teardown ----

    def setup(self) -> None:
        self.lab = Lab()
        self.ec2 = EmulatedEC2(self.lab, ready_timeout=60).start()
        orig_add, orig_term = self.lab.add_hosts, self.ec2._on_terminate

        def timed_add(specs, timeout=10.0):
            t = time.monotonic()
            try:
                hosts = orig_add(specs, timeout=timeout)
                # what the lab's own readiness probe left in the new hosts' sshd logs: not swarm's
                self._born.update({h.ip: controller_counts(h, self.lab.bridge_ip) for h in hosts})
                return hosts
            finally:
                self.emu_launch.append(time.monotonic() - t)

        def timed_term(ids):
            # a terminated host's log goes with it: read what the command did there first
            live = self.ec2.hosts
            for h in (live[i] for i in ids if i in live):
                self._gone[h.ip] = controller_counts(h, self.lab.bridge_ip)
            t = time.monotonic()
            try:
                return orig_term(ids)
            finally:
                self.emu_remove.append(time.monotonic() - t)

        self.lab.add_hosts = timed_add          # instance attributes: only this lab / emulator
        self.ec2._on_terminate = timed_term
        self.nginx = Nginx(self.tmp / "nginx", self.lab.bridge_ip).start()
        self._write_project()
        self._compile_swarm()

    def _compile_swarm(self) -> None:
        """swarm's bytecode, as pip writes it when it installs the wheel: from a checkout with
        PYTHONDONTWRITEBYTECODE set (CI, this lab) every command would compile its sources
        again, 0.2-0.3 CPU-s that no user pays. (compileall writes whatever that variable says;
        __pycache__ is ignored by git.)"""
        subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0", str(REPO / "swarm")],
                       env=self.env(), check=True, timeout=120, stdout=subprocess.DEVNULL)

    def close(self) -> None:
        errors = []
        for what, fn in (("qdisc", lambda: self.shaped and unshape(self.shaped)),
                         ("nginx", lambda: self.nginx and self.nginx.stop()),
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
                argv = [sys.executable, str(Path(__file__).with_name("_profiled.py")), f"{stem}.txt", *args]
            else:
                spy = Path(sys.executable).parent / "py-spy"
                idle = {"py-spy": ["--idle"], "py-spy-gil": ["--gil"]}.get(self.args.profile, [])
                argv = [str(spy) if spy.exists() else "py-spy", "record", "-r", "200", *idle,
                        "-f", "raw", "-o", f"{stem}.folded", "--", sys.executable, "-m", "swarm", *args]
        usage_file = self.tmp / f"rusage-{len(self.results['commands'])}.json"
        calls0 = len(getattr(self.ec2, "calls", []))
        self._born, self._gone = {}, {}
        ssh0 = self._controller_counts()
        tx0 = link_tx(self.lab.bridge)
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
        link_bytes = link_tx(self.lab.bridge) - tx0
        ssh1 = {**self._gone, **self._controller_counts()}
        ctl: Counter = Counter()
        for ip, c in ssh1.items():
            ctl.update(c - (ssh0.get(ip) or self._born.get(ip) or Counter()))
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
                  "\n".join(s for _, s in marks), marks,
                  link_bytes=link_bytes, ssh=ctl, hosts=max(len(ssh0), len(ssh1)))
        api = getattr(self.ec2, "calls", None)
        cmd.api_calls = Counter(a for _, a, _ in api[calls0:]) if api is not None else None
        self.results["commands"].append({"cycle": self.cycle, **cmd.brief(),
                                         "aws_calls": dict(cmd.api_calls or {})})
        if check and cmd.code != 0:
            raise SwarmFailed(f"`swarm {' '.join(args)}` exited {cmd.code} after {wall:.1f}s:\n"
                              f"{cmd.err[-2000:]}\n{cmd.out[-1000:]}")
        return cmd

    def _controller_counts(self) -> dict[str, Counter]:
        return {ip: controller_counts(h, self.lab.bridge_ip) for ip, h in self.hosts_by_ip().items()}

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
        res = master.exec(locust_shell.stats_url_cmd(WEB_PORT), timeout=20)
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
        self.nsenter_all(hosts, [locust_shell.kill_cmd(RD)] * len(hosts), timeout=60)
