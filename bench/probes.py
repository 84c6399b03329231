"""What the bench reads on the emulated hosts themselves, independently of what swarm reports:
sshd's CPU and log, the bytes sent to a host, Locust's log, the Locust processes' CPU."""
from __future__ import annotations

import os
import re
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

from common import RD, median

LOG_TS = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})\]")
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


def controller_counts(host, controller_ip: str) -> Counter:
    """What the host's sshd logged of the controller's own use of it: TCP connections from the
    controller's address ("Connection from IP port"), and sessions it started ("Starting
    session: ... from IP port"). Connections from other hosts (a master relaying a tree to its
    workers) are not the controller's."""
    c: Counter = Counter()
    try:
        text = host.log_path.read_text(errors="replace")
    except OSError:
        return c
    src = f"from {controller_ip} port "
    for line in text.splitlines():
        if line.startswith(f"Connection {src}"):
            c["tcp"] += 1
        elif line.startswith("Starting session: ") and src in line:
            c["execs"] += 1
    return c


def per_host(counts: list[Counter]) -> dict[str, float]:
    keys = ("tcp", "logins", "execs", "subsystems", "bytes_in")
    out = {}
    for k in keys:
        vals = [c.get(k, 0) for c in counts]
        out[k] = median(vals) if vals else 0
        out[f"{k}_max"] = max(vals) if vals else 0
    return out


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
