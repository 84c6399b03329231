"""P1 bring-up: `swarm up workers -n N` (after `up master`) with the real bootstrap.sh, and its
floor, the same bootstrap.sh started directly on every worker at once. Also `down`, its
other end. Steps of the cycle in bench.py; the hosts they bring up serve P2 and P5 next."""
from __future__ import annotations

import time
from typing import Any

from common import LOCUST_VERSION, RD, STACK, Cmd, log
from harness import Bench
from probes import per_host, sshd_counts, sshd_cpu_s


def up(b: Bench, n: int) -> tuple[Cmd, Cmd, Any, list]:
    """`up master`, then `up workers -n N`: (both commands, the master, the workers in IP order)."""
    up_m = b.swarm("up master", "up", "master")
    (master,) = list(b.hosts_by_ip().values())
    # The master's warm Locust imports once `up master` has exited: let it finish, as it
    # would on its own CPU on EC2, rather than compete with `up workers` here.
    b.wait_warm([master], since=up_m.t0 + up_m.wall, timeout=180)
    emu0 = len(b.emu_launch)
    up_w = b.swarm("up workers", "up", "workers", "-n", str(n))
    emu = sum(b.emu_launch[emu0:])
    workers = [h for ip, h in sorted(b.hosts_by_ip().items(),
                                     key=lambda kv: tuple(int(x) for x in kv[0].split(".")))
               if h is not master]
    assert len(workers) == n, (len(workers), n)
    t_launch, t_boot = up_w.mark("launching"), up_w.mark("bootstrapping")
    b.sample("P1_up_workers_s", n, up_w.wall)
    b.sample("P1_emulated_launch_s", n, emu)
    b.sample("P1_net_of_emulation_s", n, up_w.wall - emu)
    b.sample("P1_phase_start_s", n, t_launch)
    b.sample("P1_phase_launch_s", n, (t_boot - t_launch) if t_boot and t_launch else None)
    b.sample("P1_phase_bootstrap_s", n, (up_w.wall - t_boot) if t_boot else None)
    counts = [sshd_counts(h) for h in workers]
    b.sample("P1_ssh_per_host", n, per_host(counts))
    # `up` leaves a warm Locust importing on every host once it has exited (what makes the
    # next `run` start at once). Wait for it, so that it neither slows the floors below nor
    # hides in P2; its time is reported.
    warm = b.wait_warm([master, *workers], since=up_w.t0 + up_w.wall, timeout=180)
    b.sample("P1_warm_ready_after_up_s", n, warm)
    # the sessions have ended and been reaped once `up` has exited (the warm Locusts are
    # not under sshd: they are the host's init's)
    b.sample("P1_hosts_sshd_cpu_s", n, sum(sshd_cpu_s(h) for h in workers))
    return up_m, up_w, master, workers


def floor_bootstrap(b: Bench, n: int, workers: list) -> None:
    """The same bootstrap.sh, directly on every worker at once."""
    env = (f"SWARM_LOCUST_VERSION={LOCUST_VERSION} SWARM_ROLE=worker SWARM_STACK={STACK} "
           f"SWARM_REMOTE_DIR={RD}")
    t = time.monotonic()
    res = b.nsenter_all(workers, [f"cd {RD} && {env} bash bootstrap/bench-bootstrap.sh "
                                  ">floor-bootstrap.log 2>&1"] * n)
    b.sample("P1_floor_bootstrap_s", n, time.monotonic() - t)
    if any(r.returncode for r in res):
        log(f"warning: floor bootstrap failed on {sum(1 for r in res if r.returncode)} host(s)")


def down(b: Bench, n: int) -> Cmd:
    emr0 = len(b.emu_remove)
    down = b.swarm("down", "down", timeout=300)
    emu_rm = sum(b.emu_remove[emr0:])
    b.sample("down_s", n, down.wall)
    b.sample("down_net_of_emulation_s", n, down.wall - emu_rm)
    return down
