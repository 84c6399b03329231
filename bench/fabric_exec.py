#!/usr/bin/env python3
"""Why swarm runs commands on its own channels and not with fabric's `Connection.run`.

    python tests/run_in_lab.py -- .venv/bin/python bench/fabric_exec.py [--reps 5] [--n 40]

One emulated host (a network namespace with a real sshd, see tests/emulation). Over one
connection already open, --n short commands (`true`, then `cat` of 1 MB), run one after the
other, by fabric's `Connection.run` (invoke's runner: threads that pump stdout and stderr and
watch stdin) and by swarm's `SSHRunner.run` (one channel, one select loop). Median of --reps
rounds, alternated. Goal F1: swarm's time per command <= fabric's (printed PASS/MISS).
Traffic: only the lab host on the lab bridge.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fabric  # noqa: E402

from swarm.remote.ssh import SSHRunner  # noqa: E402
from tests.emulation.lab import Lab  # noqa: E402
from tests.emulation.plugin import make_ed25519_keypair  # noqa: E402

COMMANDS = {"true": "true", "1 MB out": "head -c 1048576 /dev/zero"}


def _time(fn, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--n", type=int, default=40)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Lab() as lab:
        key = Path(tmp) / "key"
        host = lab.add_host(authorized_key=make_ed25519_keypair(key))
        known = Path(tmp) / "known_hosts"
        ours = SSHRunner(host.ip, user="root", key_file=key, known_hosts=known)
        ours.wait_ready(30)
        theirs = fabric.Connection(host.ip, user="root", connect_kwargs={
            "key_filename": str(key), "look_for_keys": False, "allow_agent": False})
        theirs.client.load_host_keys(str(known))   # pinned by ours; fabric's AutoAdd unused
        theirs.open()
        worst = 0.0
        print(f"{'command':<10} {'fabric run':>12} {'swarm run':>12} {'ratio':>7}")
        for label, cmd in COMMANDS.items():
            fab, own = [], []
            for _ in range(args.reps):
                fab.append(_time(lambda: theirs.run(cmd, hide=True, in_stream=False), args.n))
                own.append(_time(lambda: ours.run(cmd, timeout=30), args.n))
            f, o = statistics.median(fab), statistics.median(own)
            worst = max(worst, o / f)
            print(f"{label:<10} {f * 1000:>10.1f}ms {o * 1000:>10.1f}ms {o / f:>7.2f}")
        theirs.close()
        ours.close()
    verdict = "PASS" if worst <= 1.0 else "MISS"
    print(f"F1 swarm per command <= fabric's: worst ratio {worst:.2f} {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
