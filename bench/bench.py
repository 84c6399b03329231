#!/usr/bin/env python3
"""What swarm adds on top of EC2 and Locust, measured on emulated hosts.

    make bench                      # as root: installs nginx-light if missing, runs in a lab netns
    python tests/run_in_lab.py -- .venv/bin/python bench/bench.py [--reps 3] [--sizes 1,10,30]
                                    [--only P1,...,P7] [--quick] [--profile py-spy|py-spy-gil|...]
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
               for each command at the largest N; and at every N the controller's cost per host
               of every command: CPU-s, TCP connections and exec sessions it opened (sshd's log,
               from the controller's address), bytes it sent into the lab (the bridge's tx).
  P6 uplink    the bridge's egress (the controller's uplink) shaped to 20 Mbit/s with tc tbf; a
               20 MB incompressible bootstrap/ and a no-op script; `up master`, `up workers -n N`:
               wall time and bytes through the controller's link per command, against the tree.
  P7 many      N = 100 (--p7-n) workers: up master, up workers, run (UI) until all connected,
               killall, run --headless 5 s, killall, down: every command succeeds, peak RSS and
               CPU-s per host. Once per run.
P1 and P3 are information rows, not goals: ratios of wall time that the 2 shared cores decide.
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
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

# one module per measure group (bringup P1, start P2, upload P3, per_core P4, footprint P5);
# what they share: common, harness, probes, target; report: goals and table
import bringup
import cost
import footprint
import start
from common import LAB_NETS, RESULTS_JSON, SwarmFailed, log, machine_info, preflight
from harness import Bench
from hundred import cycle_hundred
from per_core import cycle_per_core
from report import print_table, summarize
from uplink import cycle_uplink
from upload import cycle_upload

# after `common`, which puts the repository on sys.path
from tests.emulation import install_guard

# --------------------------------------------------------------------------- the order of things

def cycle_run(b: Bench, n: int) -> None:
    """P1, P2 and P5 share one cycle: `run` starts on the hosts `up` has just brought up."""
    log(f"cycle N={n}: up master, up workers, run (UI), run (headless), status, killall, down")
    b.fresh_stack("bootstrap")
    try:
        _cycle_run(b, n)
    finally:
        b.swarm("down", "down", check=False, timeout=300)


def _cycle_run(b: Bench, n: int) -> None:
    up_m, up_w, master, workers = bringup.up(b, n)
    bringup.floor_bootstrap(b, n, workers)
    run_ui, kill = start.run_ui(b, n, master, workers)
    start.floors(b, n, master, workers)
    head = start.headless(b, n, master)
    status = b.swarm("status", "status", "--json")
    kill2 = b.swarm("killall (after headless)", "killall")
    down = bringup.down(b, n)
    cmds = (up_m, up_w, run_ui, kill, head, status, kill2, down)
    cost.record(b, n, cmds)
    if n == max(b.args.sizes):
        footprint.record(b, n, cmds)


def run(b: Bench) -> None:
    only = b.args.only
    t_start = time.monotonic()
    failures = b.results.setdefault("failures", [])

    def attempt(what: str, fn: Callable[[], None]) -> None:
        # One failed cycle (swarm changes under our feet) is recorded, not fatal: the other
        # cycles still measure, and the exit code says something failed.
        try:
            fn()
        except (SwarmFailed, AssertionError, OSError, subprocess.SubprocessError) as e:
            failures.append({"cycle": b.cycle, "what": what, "error": str(e)[-3000:]})
            log(f"FAILED {what}: {str(e)[-1500:]}")

    try:
        for rep in range(b.args.reps):
            for n in b.args.sizes:
                if {"P1", "P2", "P5"} & only:
                    attempt(f"run cycle N={n}", lambda: cycle_run(b, n))
                if "P3" in only:
                    attempt(f"upload cycle N={n}", lambda: cycle_upload(b, n))
                if "P6" in only:
                    attempt(f"uplink cycle N={n}", lambda: cycle_uplink(b, n))
            if {"P1", "P2", "P3", "P5", "P6"} & only:
                log(f"repetition {rep + 1}/{b.args.reps} done after "
                    f"{time.monotonic() - t_start:.0f}s")
        if "P4" in only:
            attempt("P4", lambda: cycle_per_core(b))
        if "P7" in only:
            # once per run: one N, many hosts; its goals are a pass/fail and a footprint
            attempt("P7", lambda: cycle_hundred(b))
    finally:
        b.results["bench_runtime_s"] = round(time.monotonic() - t_start, 1)


# --------------------------------------------------------------------------- main

def parse_args(argv: list[str]):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=3, help="repetitions of every figure (median)")
    p.add_argument("--sizes", default="1,10,30", help="numbers of worker hosts")
    p.add_argument("--only", default="P1,P2,P3,P4,P5,P6,P7", help="which of P1..P7 to measure")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: --reps 1 --sizes 1,3, short P4, 4 MB P6, P7 at N=10")
    p.add_argument("--p6-mb", type=int, default=20, help="P6: MB of the bootstrap/ tree")
    p.add_argument("--p7-n", type=int, default=100, help="P7: number of worker hosts")
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
        a.reps, a.sizes, a.p4_seconds, a.p6_mb, a.p7_n = 1, "1,3", 4, 4, 10
    a.sizes = sorted({int(x) for x in str(a.sizes).split(",") if x.strip()})
    a.only = {x.strip().upper() for x in a.only.split(",") if x.strip()}
    if a.reps < 1 or not a.sizes or a.sizes[0] < 1 or a.sizes[-1] > 200:
        p.error("--reps >= 1 and sizes between 1 and 200")
    if not 1 <= a.p7_n <= 240 or not 1 <= a.p6_mb <= 200:
        p.error("--p7-n between 1 and 240 (the lab's /24), --p6-mb between 1 and 200")
    return a


def report(path: str) -> int:
    """Print the table of an earlier run from its results.json."""
    doc = json.loads(Path(path).read_text())
    st = doc["settings"]
    args = argparse.Namespace(reps=st["reps"], sizes=st["sizes"], only=set(st["only"]),
                              p7_n=st.get("p7_n", 100))
    holder = argparse.Namespace(load_samples=[tuple(x) for x in doc.get("load_avg_per_cycle", [])],
                                results=doc)
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
        run(bench)
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
                        "p6_mb": args.p6_mb, "p7_n": args.p7_n,
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
