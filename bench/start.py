"""P2 start: `swarm run` on hosts brought up by P1. UI mode returns once every worker is
connected (checked on the master's own /stats/requests); headless is timed to the master's
"Sending spawn jobs ... to N ready workers". Floors: the same start commands directly on the
hosts. Also `killall` and its floor, which the runs need in between."""
from __future__ import annotations

import time

from common import MASTER_PORT, RD, WEB_PORT, Cmd, SwarmFailed, locust_argv, locust_shell
from harness import Bench
from probes import first_ts, locust_log, nth_ready_ts, per_host, sshd_counts


def run_ui(b: Bench, n: int, master, workers: list) -> tuple[Cmd, Cmd]:
    """`swarm run` in UI mode, then `swarm killall`: (both commands)."""
    target = b.nginx.url
    ssh0 = {h.ip: sshd_counts(h) for h in [master, *workers]}
    run_ui = b.swarm("run (UI)", "run", "-H", target, "-f", "light.py", "-u", str(n), "-r", str(n))
    stats = b.master_stats(master)
    if int(stats.get("worker_count", -1)) != n:
        raise SwarmFailed(f"after `swarm run` the master reports {stats.get('worker_count')} "
                          f"workers, expected {n}")
    ready = nth_ready_ts(locust_log(master), n)
    b.sample("P2_run_ui_s", n, run_ui.wall)
    b.sample("P2_ui_all_connected_s", n, ready - run_ui.t0 if ready else None)
    b.sample("P2_phase_start_s", n, run_ui.mark("syncing"))
    sync, start, conn = run_ui.mark("syncing"), run_ui.mark("starting Locust"), run_ui.mark("connected")
    b.sample("P2_phase_sync_s", n, (start - sync) if sync and start else None)
    b.sample("P2_phase_wait_workers_s", n, (conn - start) if conn and start else None)
    b.sample("P2_ssh_per_host", n, per_host([sshd_counts(h) - ssh0[h.ip] for h in workers]))
    b.sample("P2_ssh_master", n, dict(sshd_counts(master) - ssh0[master.ip]))
    kill = b.swarm("killall", "killall")
    b.sample("killall_s", n, kill.wall)
    return run_ui, kill


def floors(b: Bench, n: int, master, workers: list) -> None:
    """The same start commands, directly on the hosts, all at once: forked by the warm Locust
    as swarm does, then cold (a new `locust` process importing Locust)."""
    target = b.nginx.url
    spec = locust_argv.RunSpec(locustfile="light.py", host=target, users=n, spawn_rate=n, run_time=None,
                     headless=False, expect_workers=n, master_port=MASTER_PORT, web_port=WEB_PORT)
    for key, warm in (("P2_floor_all_connected_s", True), ("P2_floor_cold_all_connected_s", False)):
        cmds = [locust_shell.start_cmd(RD, locust_argv.master_argv(spec), fresh_results=True, warm=warm)]
        cmds += [locust_shell.start_cmd(RD, locust_argv.worker_argv("light.py", master.ip, MASTER_PORT, 1), warm=warm)] * n
        t0w = time.time()
        b.nsenter_all([master, *workers], cmds, timeout=60)
        ready = b.wait_log(master, lambda lines: nth_ready_ts(lines, n), timeout=120)
        b.sample(key, n, ready - t0w if ready else None)
        t = time.monotonic()
        b.kill_locust([master, *workers])
        if warm:
            b.sample("killall_floor_s", n, time.monotonic() - t)


def headless(b: Bench, n: int, master) -> Cmd:
    """From invoking swarm to the master sending spawn jobs to all N workers, and from the end
    of the load to swarm's exit."""
    target = b.nginx.url
    head = b.swarm("run (headless)", "run", "-H", target, "-f", "light.py", "--headless",
                   "-u", str(n), "-r", str(n), "-t", "3s")
    lines = locust_log(master)   # the master's log stays on the host after the run
    spawn = first_ts(lines, rf"Sending spawn jobs of \d+ users at [\d.]+ spawn rate to {n} ready workers")
    ready = nth_ready_ts(lines, n)
    end = first_ts(lines, r"--run-time limit reached|Time limit reached|Shutting down")
    b.sample("P2_headless_started_s", n, spawn - head.t0 if spawn else None)
    b.sample("P2_headless_connected_s", n, ready - head.t0 if ready else None)
    b.sample("P2_headless_end_to_exit_s", n, (head.t0 + head.wall - end) if end else None)
    # where the end goes: Locust's --autoquit, Locust exiting, swarm noticing + fetching
    quit_ts = first_ts(lines, r"--autoquit time reached")
    try:
        exit_ts = (master.home / RD / "locust.exit").stat().st_mtime
    except OSError:
        exit_ts = None
    # Locust's exit: its quit (the workers told, and heard quitting), then its shutdown
    # (quitting handlers, the --html / --csv / --json files, exit)
    shut_ts = first_ts(lines, r"Shutting down \(exit code")
    if end and quit_ts and exit_ts:
        b.sample("P2_headless_end_phases_s", n, {
            "autoquit": quit_ts - end, "locust_exit": exit_ts - quit_ts,
            "swarm_after_exit": head.t0 + head.wall - exit_ts,
            "quit": shut_ts - quit_ts if shut_ts else None,
            "shutdown": exit_ts - shut_ts if shut_ts else None})
    b.sample("P2_headless_total_s", n, head.wall)
    return head
