"""P3 upload: `swarm up workers -n N` with a 200-file, 5 MB bootstrap/ and a no-op script, timed
from swarm's "bootstrapping" line to its exit, with sshd's own counts per host. Floors: the same
tar unpacked + the same script on every host directly, and through OpenSSH's `ssh`."""
from __future__ import annotations

import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import footprint
from common import RD, STACK, log, median, replace_tree_cmd
from harness import Bench
from probes import per_host, sshd_counts, sshd_cpu_s, veth_tx


def cycle_upload(b: Bench, n: int) -> None:
    log(f"cycle N={n}: 5 MB bootstrap/ upload")
    b.fresh_stack("bigboot")
    try:
        up_m = b.swarm("up master", "up", "master")
        (master,) = list(b.hosts_by_ip().values())
        b.wait_warm([master], since=up_m.t0 + up_m.wall, timeout=180)
        up_w = b.swarm("up workers (5 MB)", "up", "workers", "-n", str(n))
        workers = [h for h in b.hosts_by_ip().values() if h is not master]
        # The warm Locusts import after `up` exits: not during the floors below. (Their
        # connections close as `up` exits, so sshd has logged "Transferred: ..." by then.)
        b.wait_warm(workers, since=up_w.t0 + up_w.wall, timeout=180)
        b.sample("P3_hosts_sshd_cpu_s", n, sum(sshd_cpu_s(h) for h in workers))
        boot = up_w.mark("bootstrapping")
        b.sample("P3_bootstrap_phase_s", n, (up_w.wall - boot) if boot else None)
        b.sample("P3_up_workers_s", n, up_w.wall)
        per = per_host([sshd_counts(h) for h in workers])
        per["veth_bytes_to_host"] = median([veth_tx(h) for h in workers])
        per["payload_bytes"] = b.big_payload
        b.sample("P3_ssh_per_host", n, per)
        _floors(b, n, workers)
        if n == max(b.args.sizes):
            footprint.record(b, n, [up_w])
    finally:
        b.swarm("down", "down", check=False, timeout=300)


def _floors(b: Bench, n: int, workers: list) -> None:
    """The same tar unpacked + the same script on every host at once: directly (nsenter:
    the hosts' own work) and through OpenSSH's `ssh` client (one process per host)."""
    for h in workers:
        (h.home / "bench-payload.tgz").write_bytes(b.big_tar)
    cmd = (f"{replace_tree_cmd(f'{RD}/floor-boot')} <bench-payload.tgz && "
           f"cd {RD} && bash floor-boot/bench-bootstrap.sh >/dev/null")
    t = time.monotonic()
    res = b.nsenter_all(workers, [cmd] * n)
    b.sample("P3_floor_untar_s", n, time.monotonic() - t)
    if any(r.returncode for r in res):
        log(f"warning: upload floor failed on {sum(1 for r in res if r.returncode)} host(s)")
    for h in workers:
        (h.home / "bench-payload.tgz").unlink(missing_ok=True)
    ssh = shutil.which("ssh")
    key = b.state_dir / "ec2" / "us-east-1" / STACK / "id_swarm"
    if not ssh or not key.is_file():
        return
    remote = (f"{replace_tree_cmd(f'{RD}/ossh-boot')} && cd {RD} && "
              f"bash ossh-boot/bench-bootstrap.sh >/dev/null")

    def one(h):
        return subprocess.run([ssh, "-i", str(key), "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
                               "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                               "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=20", f"root@{h.ip}", remote],
                              input=b.big_tar, capture_output=True, timeout=300).returncode

    t = time.monotonic()
    with ThreadPoolExecutor(max_workers=n) as pool:
        codes = list(pool.map(one, workers))
    b.sample("P3_floor_openssh_s", n, time.monotonic() - t)
    if any(codes):
        log(f"warning: OpenSSH upload failed on {sum(1 for c in codes if c)} host(s)")
