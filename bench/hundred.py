"""P7 many workers: `up master`, `up workers -n N` (N = --p7-n, 100 by default), `run` in UI mode
until all N are connected (checked on the master's own /stats/requests), `killall`, a short
`run --headless`, `killall`, `down`, with the real bootstrap.sh and `[locust] processes = 1`.
Every command must succeed; each one's peak RSS and CPU-s per host of the stack are recorded.
The sequence stops at the first failure (what follows needs it) and `down` still runs."""
from __future__ import annotations

import cost
import footprint
from common import Cmd, log
from harness import Bench

HEADLESS_S = 5


def cycle_hundred(b: Bench) -> None:
    n = b.args.p7_n
    log(f"cycle P7: N={n} workers: up, run (UI) until all connected, headless {HEADLESS_S}s, down")
    b.fresh_stack("bootstrap")
    cmds: list[Cmd] = []
    res = b.results.setdefault("P7", {"n": n, "commands": [], "problems": []})
    target = b.nginx.url

    def step(name: str, *argv: str, timeout: float = 900) -> Cmd | None:
        c = b.swarm(name, *argv, check=False, timeout=timeout)
        cmds.append(c)
        res["commands"].append({"name": name, "code": c.code, "wall_s": round(c.wall, 2),
                                "rss_mb": round(c.rss_mb, 1), "cpu_s": round(c.cpu, 3),
                                "hosts": c.hosts})
        if c.code != 0:
            res["problems"].append(f"`swarm {' '.join(argv)}` exited {c.code}: "
                                   f"{(c.err.strip().splitlines() or ['?'])[-1]}")
            return None
        return c

    try:
        up_m = step("up master", "up", "master")
        if up_m is None:
            return
        (master,) = list(b.hosts_by_ip().values())
        b.wait_warm([master], since=up_m.t0 + up_m.wall, timeout=180)
        up_w = step("up workers", "up", "workers", "-n", str(n))
        if up_w is None:
            return
        hosts = list(b.hosts_by_ip().values())
        if len(hosts) != n + 1:
            res["problems"].append(f"{len(hosts) - 1} worker hosts after `up workers -n {n}`")
        # every warm Locust imports once `up` has exited: N+1 imports on 2 cores, not swarm's
        warm = b.wait_warm(hosts, since=up_w.t0 + up_w.wall, timeout=600)
        res["warm_ready_after_up_s"] = warm
        run_ui = step("run (UI)", "run", "-H", target, "-f", "light.py", "-u", str(n), "-r", str(n))
        if run_ui is None:
            return
        workers = int(b.master_stats(master).get("worker_count", -1))
        res["worker_count_after_run"] = workers
        if workers != n:
            res["problems"].append(f"after `swarm run` the master reports {workers} workers, "
                                   f"not {n}")
        if step("killall", "killall") is None:
            return
        if step("run (headless)", "run", "-H", target, "-f", "light.py", "--headless", "-u", str(n),
                "-r", str(n), "-t", f"{HEADLESS_S}s") is None:
            return
        step("killall (after headless)", "killall")
    finally:
        step("down", "down", timeout=600)
        cost.record(b, n, cmds)
        footprint.record(b, n, cmds, prefix="P7")
        b.sample("P7_all_succeeded", n, not res["problems"] and len(cmds) == 7)
        b.sample("P7_max_rss_mb", n, max(c.rss_mb for c in cmds))
        b.sample("P7_max_cpu_per_host_s", n, max(c.cpu / (n + 1) for c in cmds))
