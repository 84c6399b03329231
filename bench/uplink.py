"""P6 shaped uplink: the controller's link into the lab shaped to 20 Mbit/s (tbf on the bridge's
egress, link.py), a 20 MB incompressible bootstrap/ with a no-op script, `up master` then
`up workers -n N`: wall time, and the bytes the controller sent into the lab per command,
against the tree's size. Once per bench run, the shaping itself is checked: the controller
sending to a host runs at 20 Mbit/s, host to host does not pass the shaper at all."""
from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import cost
from common import NOOP_BOOTSTRAP, log, tar_bytes
from harness import Bench
from link import link_tx, qdisc_sent, shape, unshape

TREE = "uplinkboot"
PROBE_MB = 2.5                    # controller -> host at 20 Mbit/s: ~1 s
PEER_MB = 20                      # host -> host: would be 8 s if it were shaped


@contextlib.contextmanager
def shaped(b: Bench) -> Iterator[None]:
    """The bridge's root qdisc is tbf while inside, and removed (`tc qdisc del dev BR root`)
    on the way out, also on errors; Bench.close() removes it if the bench dies inside."""
    dev = b.lab.bridge
    shape(dev)
    b.shaped = dev
    try:
        yield
    finally:
        b.results.setdefault("P6_qdisc", []).append(qdisc_sent(dev))
        unshape(dev)
        b.shaped = None


def write_tree(b: Bench) -> int:
    """bootstrap/ of --p6-mb MB random bytes in 1 MB files plus the no-op script; its tar's size."""
    d = b.work / TREE
    if not d.is_dir():
        d.mkdir()
        (d / "bench-bootstrap.sh").write_text(NOOP_BOOTSTRAP)
        rnd = random.Random(6)
        for i in range(b.args.p6_mb):
            (d / f"blob{i:02d}.bin").write_bytes(rnd.randbytes(1024 * 1024))
    return len(tar_bytes(d))


def cycle_uplink(b: Bench, n: int) -> None:
    tree = write_tree(b)
    log(f"cycle N={n}: P6, {tree / 1e6:.1f} MB bootstrap/ through a 20 Mbit/s uplink")
    b.fresh_stack(TREE)
    try:
        with shaped(b):
            up_m = b.swarm("up master (shaped)", "up", "master")
            (master,) = list(b.hosts_by_ip().values())
            b.wait_warm([master], since=up_m.t0 + up_m.wall, timeout=180)
            emu0 = len(b.emu_launch)
            up_w = b.swarm("up workers (shaped)", "up", "workers", "-n", str(n))
            emu = sum(b.emu_launch[emu0:])
            workers = [h for h in b.hosts_by_ip().values() if h is not master]
            if "P6_check" not in b.results:
                b.results["P6_check"] = check_claim(b, master, workers[0])
        b.sample("P6_tree_mb", n, tree / 1e6)
        for key, c in (("up_master", up_m), ("up_workers", up_w)):
            b.sample(f"P6_{key}_s", n, c.wall)
            b.sample(f"P6_{key}_mb", n, c.link_bytes / 1e6)
            b.sample(f"P6_{key}_x_tree", n, c.link_bytes / tree)
        # what the lab adds before any byte of the tree moves: moto creating the N hosts one
        # by one (real EC2 boots them in parallel), on cores every host shares
        boot = up_w.mark("bootstrapping")
        b.sample("P6_up_workers_emulated_launch_s", n, emu)
        b.sample("P6_up_workers_bootstrap_phase_s", n, (up_w.wall - boot) if boot else None)
        cost.record(b, n, [up_m, up_w])
        b.wait_warm(workers, since=up_w.t0 + up_w.wall, timeout=300)
    finally:
        b.swarm("down", "down", check=False, timeout=300)


def check_claim(b: Bench, master, worker) -> dict[str, float]:
    """With the shaper on: the controller's nginx sending PROBE_MB to a host (shaped), and one
    host sending PEER_MB to another (switched by the bridge, not shaped); the bridge's tx
    during each."""
    www = b.nginx.root / "www"
    (www / "p6-probe.bin").write_bytes(random.Random(1).randbytes(int(PROBE_MB * 1e6)))
    out: dict[str, float] = {}
    try:
        tx0 = link_tx(b.lab.bridge)
        size, secs = _curl(worker, f"{b.nginx.url}/p6-probe.bin")
        out["controller_to_host_mbit_s"] = size * 8 / secs / 1e6 if secs else 0.0
        sent = link_tx(b.lab.bridge) - tx0
        out["controller_to_host_bridge_tx_x"] = sent / size if size else 0.0
    finally:
        (www / "p6-probe.bin").unlink(missing_ok=True)
    port = 5557                   # the stack's group opens Locust's ports between its hosts
    d = master.home / "p6-peer"
    d.mkdir(exist_ok=True)
    (d / "blob.bin").write_bytes(random.Random(2).randbytes(PEER_MB * 1000 * 1000))
    master.exec(f"cd p6-peer && (timeout 60 python3 -m http.server {port} --bind {master.ip} "
                f">/dev/null 2>&1 & echo $! >server.pid)", timeout=20)
    try:
        tx0 = link_tx(b.lab.bridge)
        size, secs = _curl(worker, f"http://{master.ip}:{port}/blob.bin")
        out["host_to_host_mbit_s"] = size * 8 / secs / 1e6 if secs else 0.0
        out["host_to_host_bridge_tx_bytes"] = link_tx(b.lab.bridge) - tx0
    finally:
        master.exec("kill $(cat p6-peer/server.pid) 2>/dev/null; rm -rf p6-peer", timeout=20)
    log(f"P6 check: controller -> host {out.get('controller_to_host_mbit_s', 0):.1f} Mbit/s, "
        f"host -> host {out.get('host_to_host_mbit_s', 0):.0f} Mbit/s "
        f"(bridge tx meanwhile {out.get('host_to_host_bridge_tx_bytes', 0)} bytes)")
    return out


def _curl(host, url: str) -> tuple[int, float]:
    """(bytes, seconds) of one download inside `host`; retried while the server starts (bounded)."""
    res = host.exec(f"for i in $(seq 50); do o=$(curl -sf -o /dev/null -w '%{{size_download}} "
                    f"%{{time_total}}' {url}) && {{ echo \"$o\"; exit 0; }}; sleep 0.1; done; "
                    "exit 1", timeout=120)
    try:
        size, secs = res.stdout.split()
        return int(size), float(secs)
    except ValueError:
        log(f"warning: P6 check: {url} not fetched ({res.returncode}): {res.stderr[-300:]}")
        return 0, 0.0
