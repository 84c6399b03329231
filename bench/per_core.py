"""P4 per core: requests/s (counted by the nginx target) of one worker host, 1 process, through
`swarm run --headless`, against bare `locust --headless` and Locust's own distributed mode
started without swarm, on the same host with the same file, users and time; alternated."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from common import MASTER_PORT, RD, SwarmFailed, locust_argv, locust_shell, locust_stats, log
from harness import Bench
from probes import CpuWatch


def cycle_per_core(b: Bench) -> None:
    users, secs, reps = b.args.p4_users, b.args.p4_seconds, b.args.reps
    log(f"P4: one worker host, 1 process, {users} users, {secs}s: swarm, bare locust, locust "
        f"distributed without swarm, x{reps}")
    b.fresh_stack("bootstrap")
    try:
        b.swarm("up master", "up", "master")
        (master,) = list(b.hosts_by_ip().values())
        b.swarm("up workers", "up", "workers", "-n", "1")
        (worker,) = [h for h in b.hosts_by_ip().values() if h is not master]
        # the first run is swarm's: it ships locustfiles/, so the bare run uses the same file
        # swarm; bare = one standalone `locust --headless`; dist = Locust's own distributed
        # mode (the same master + worker, started on the hosts without swarm)
        order: list[str] = []
        for i in range(reps):           # rotated, so no kind always runs first or last
            order += [["swarm", "bare", "dist"], ["bare", "dist", "swarm"],
                      ["dist", "swarm", "bare"]][i % 3]
        for kind in order:
            before = b.nginx.requests()
            watch = CpuWatch(worker, timeout=secs + 180).start()
            if kind == "swarm":
                c = b.swarm("run (P4)", "run", "-H", b.nginx.url, "-f", "max.py", "--headless",
                            "-u", str(users), "-r", str(users), "-t", f"{secs}s")
                res_dir = next((line.split("results:", 1)[1].strip() for _, line in c.marks
                                if line.startswith("results:")), None)
                csv = (b.work / res_dir / "locust_stats.csv") if res_dir else None
            elif kind == "dist":
                mcmd = (f"cd {RD} && rm -rf dist && mkdir dist && locust -f locustfiles/max.py "
                        f"--master --master-bind-port {MASTER_PORT} --headless -u {users} -r {users} "
                        f"-t {secs}s -H {b.nginx.url} --expect-workers 1 --csv dist/locust "
                        f"--only-summary >dist/locust.log 2>&1")
                wcmd = locust_shell.start_cmd(RD, locust_argv.worker_argv("max.py", master.ip, MASTER_PORT, 1))
                with ThreadPoolExecutor(max_workers=2) as pool:
                    mres = pool.submit(master.exec, mcmd, timeout=secs + 120)
                    pool.submit(worker.exec, wcmd, timeout=60).result()
                    if mres.result().returncode != 0:
                        raise SwarmFailed("distributed locust failed: " + (
                            master.home / RD / "dist" / "locust.log").read_text()[-800:])
                csv = master.home / RD / "dist" / "locust_stats.csv"
            else:
                cmd = (f"cd {RD} && rm -rf bare && mkdir bare && locust -f locustfiles/max.py "
                       f"--headless -u {users} -r {users} -t {secs}s -H {b.nginx.url} "
                       f"--csv bare/locust --only-summary >bare/locust.log 2>&1")
                r = worker.exec(cmd, timeout=secs + 120)
                if r.returncode != 0:
                    raise SwarmFailed(f"bare locust failed ({r.returncode}): "
                                      f"{(worker.home / RD / 'bare' / 'locust.log').read_text()[-800:]}")
                csv = worker.home / RD / "bare" / "locust_stats.csv"
            served = b.nginx.requests() - before - 1
            cpu = watch.stop()
            loc = locust_stats.parse_stats_csv(csv.read_text()) if csv and csv.is_file() else None
            b.sample("P4_rps_nginx", kind, served / secs)
            b.sample("P4_cpu_s", kind, cpu)
            b.sample("P4_req_per_cpu_s", kind, served / cpu if cpu > 0 else None)
            b.sample("P4_rps_locust", kind, loc.total.rps if loc else None)
            b.sample("P4_failures", kind, loc.total.failures if loc else None)
    finally:
        b.swarm("down", "down", check=False, timeout=300)
