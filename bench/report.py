"""The goals and the table: medians of the samples, each goal checked against its limit (with
what this machine needs anyway, where that decides it), and the table printed on stdout, both
after a run and from an earlier run's results.json (`bench.py --report`)."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from common import median

if TYPE_CHECKING:
    from harness import Bench


def summarize(b: Bench, args) -> dict[str, Any]:
    s = b.results["samples"]
    med = {m: {n: _med(v) for n, v in per.items()} for m, per in s.items()}
    sizes = [str(n) for n in args.sizes]
    lo, hi = sizes[0], sizes[-1]
    mid = "10" if "10" in sizes else (sizes[1] if len(sizes) > 2 else hi)

    def g(metric, n):
        return med.get(metric, {}).get(n)

    goals = []

    def goal(name, desc, value, limit, ok, note="", info=False):
        # info: printed with its old limit for comparison, judged by no one (P1, P3: ratios
        # of wall time that the 2 cores shared by every emulated host decide here)
        goals.append({"goal": name, "target": desc, "value": value, "limit": limit,
                      "ok": (bool(ok) if value is not None and not info else None), "note": note,
                      "info": info})

    if "P1" in args.only:
        a, z = g("P1_up_workers_s", hi), g("P1_up_workers_s", lo)
        r = a / z if a and z else None
        # What N=hi needs here whatever the controller does next: its start (as at N=lo), moto
        # creating the hosts, bootstrap.sh on all of them. Above the limit, no controller can
        # meet the goal on this machine.
        parts = [g("P1_phase_start_s", hi), g("P1_emulated_launch_s", hi), g("P1_floor_bootstrap_s", hi)]
        bound = sum(parts) if None not in parts and z else None
        goal("P1", f"up workers: N={hi} <= 1.3 x N={lo}", r, 1.3, r is not None and r <= 1.3,
             _bound_note(hi, bound, 1.3 * z if z else None, "start + moto creating hosts + bootstrap.sh floor"), info=True)
        a, z = g("P1_net_of_emulation_s", hi), g("P1_net_of_emulation_s", lo)
        r = a / z if a and z else None
        goal("P1'", "same, minus moto's emulated-host creation", r, 1.3, r is not None and r <= 1.3,
             "real EC2 boots N instances in parallel; the lab creates namespaces in series", info=True)
        a, z = g("P1_net_of_emulation_s", hi), g("P1_net_of_emulation_s", lo)
        fa, fz = g("P1_floor_bootstrap_s", hi), g("P1_floor_bootstrap_s", lo)
        r = (a - fa) / (z - fz) if None not in (a, z, fa, fz) and z - fz > 0 else None
        goal("P1''", "same, minus also the hosts' own bootstrap.sh time (floor)", r, 1.3,
             r is not None and r <= 1.3, "what the controller adds; the lab's 2 cores run every host", info=True)
    if "P2" in args.only:
        v = g("P2_run_ui_s", hi)
        st, fl = g("P2_phase_start_s", hi), g("P2_floor_all_connected_s", hi)
        goal("P2", f"run (UI) until all connected at N={hi} <= 1.5 s", v, 1.5, v is not None and v <= 1.5,
             f"floors on this machine: warm {_fmt(fl)} s, "
             f"cold {_fmt(g('P2_floor_cold_all_connected_s', hi))} s; lower bound here, swarm's "
             f"start before it reaches a host + the warm floor: "
             f"{_fmt(st + fl if st is not None and fl is not None else None)} s")
        v = g("P2_headless_end_to_exit_s", hi)
        ph = g("P2_headless_end_phases_s", hi) or {}
        goal("tail", f"headless: end of load -> swarm exits at N={hi} <= 1.5 s", v, 1.5,
             v is not None and v <= 1.5,
             "autoquit / Locust exits / swarm after: " + " / ".join(
                 _fmt(ph.get(k)) for k in ("autoquit", "locust_exit", "swarm_after_exit")))
    if "P3" in args.only:
        a, z = g("P3_bootstrap_phase_s", hi), g("P3_bootstrap_phase_s", lo)
        r = a / z if a and z else None
        goal("P3", f"5 MB bootstrap: N={hi} <= 2 x N={lo}", r, 2.0, r is not None and r <= 2.0,
             _bound_note(hi, g("P3_floor_untar_s", hi), 2.0 * z if z else None,
                         "the hosts unpacking the same tar, no SSH"), info=True)
        fa, fz = g("P3_floor_untar_s", hi), g("P3_floor_untar_s", lo)
        oa, oz = g("P3_floor_openssh_s", hi), g("P3_floor_openssh_s", lo)
        r = (a - fa) / (z - fz) if None not in (a, z, fa, fz) and z - fz > 0 else None
        ro = (oa - fa) / (oz - fz) if None not in (oa, oz, fa, fz) and oz - fz > 0 else None
        goal("P3''", "same, minus the hosts' own unpacking (floor)", r, 2.0, r is not None and r <= 2.0,
             f"OpenSSH's ssh, same measure: {_fmt(ro)}", info=True)
        per = (s.get("P3_ssh_per_host", {}).get(hi) or [None])[-1]
        if per:
            ratio = per["bytes_in"] / per["payload_bytes"] if per["payload_bytes"] else None
            ok = per["logins_max"] <= 1 and ratio is not None and ratio < 1.5
            goal("P3'", "one SSH connection and one copy of the data per host",
                 f"{per['logins_max']:g} conn, {per['execs']:g} execs, {ratio:.2f}x payload" if ratio else None,
                 "1 conn, 1x", ok, info=True)
    if "P4" in args.only:
        a, z = g("P4_req_per_cpu_s", "swarm"), g("P4_req_per_cpu_s", "bare")
        r = a / z if a and z else None
        a2, z2 = g("P4_rps_nginx", "swarm"), g("P4_rps_nginx", "bare")
        r2 = a2 / z2 if a2 and z2 else None
        a3 = g("P4_req_per_cpu_s", "dist")
        r3 = a3 / z if a3 and z else None
        goal("P4", "requests per CPU-second of the worker process, swarm / bare >= 0.95", r, 0.95,
             r is not None and r >= 0.95,
             f"requests/s, swarm / bare: {_fmt(r2)}; Locust distributed without swarm / bare: "
             f"{_fmt(r3)} per CPU-second")
    p5 = {m: v for m, v in s.items() if m.startswith("P5 ")}
    if p5:
        worst_rss = max(_med([x["rss_mb"] for x in v[hi]]) for v in p5.values() if hi in v)
        worst_cpu = max(_med([x["cpu_per_host_s"] for x in v[hi]]) for v in p5.values() if hi in v)
        goal("P5", f"peak RSS of any command at N={hi} <= 150 MB", worst_rss, 150, worst_rss <= 150)
        goal("P5'", f"CPU per host of any command at N={hi} <= 0.1 s", worst_cpu, 0.1, worst_cpu <= 0.1)
    if "P6" in args.only:
        a, z = g("P6_up_workers_s", mid), g("P6_up_workers_s", lo)
        r = a / z if a and z else None
        goal("P6", f"shaped 20 Mbit/s: up workers -n {mid} <= 1.5 x -n {lo}", r, 1.5,
             r is not None and r <= 1.5, f"{_fmt(a)} s / {_fmt(z)} s")
        a, z = g("P6_up_workers_bootstrap_phase_s", mid), g("P6_up_workers_bootstrap_phase_s", lo)
        r = a / z if a and z else None
        goal("P6b", f"same, its bootstrap phase only ('bootstrapping' to exit): -n {mid} / -n {lo}",
             r, 1.5, r is not None and r <= 1.5,
             "without moto creating the hosts one by one and waiting for their sshd", info=True)
        for n in sizes:
            xm, xw = g("P6_up_master_x_tree", n), g("P6_up_workers_x_tree", n)
            worst = max(xm, xw) if xm is not None and xw is not None else None
            goal("P6'", f"bytes through the controller link per command at N={n} <= 1.1 x the tree",
                 worst, 1.1, worst is not None and worst <= 1.1,
                 f"up master {_fmt(xm)}x, up workers {_fmt(xw)}x")
    if "P7" in args.only:
        n = str(getattr(args, "p7_n", 100))
        ok = g("P7_all_succeeded", n)
        goal("P7", f"N={n}: every command succeeds", None if ok is None else ("yes" if ok else "no"),
             "yes", ok, "; ".join((b.results.get("P7") or {}).get("problems", [])))
        v = g("P7_max_rss_mb", n)
        goal("P7'", f"N={n}: peak RSS of any command <= 150 MB", v, 150, v is not None and v <= 150)
        v = g("P7_max_cpu_per_host_s", n)
        goal("P7''", f"N={n}: CPU-s per host of any command <= 0.05", v, 0.05,
             v is not None and v <= 0.05, "per host of the stack (N + 1 hosts), as P5")
    return {"medians": med, "goals": goals}


def _bound_note(n: str, bound: float | None, limit_s: float | None, what: str) -> str:
    """Whether this machine can meet a ratio goal at all: what the largest N needs without
    the controller's own work, against the goal's limit in seconds."""
    if bound is None or limit_s is None:
        return ""
    verdict = "out of reach on this machine" if bound > limit_s else "within reach"
    return f"N={n} needs {bound:.2f} s here besides swarm's SSH work ({what}); limit {limit_s:.2f} s: {verdict}"


def _med(v):
    if not v:
        return None
    if isinstance(v[0], dict):
        keys = v[0].keys()
        nums = {k: [x.get(k) for x in v if isinstance(x.get(k), (int, float))] for k in keys}
        return {k: median(xs) if xs else None for k, xs in nums.items()}
    return median([x for x in v if isinstance(x, (int, float))])


def _fmt(x, nd=2) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def print_table(b: Bench, summary: dict[str, Any], args) -> None:
    med = summary["medians"]
    sizes = [str(n) for n in args.sizes]
    rows = [
        ("P1 up workers -n N (s)", "P1_up_workers_s"),
        ("   of which moto creating emulated hosts", "P1_emulated_launch_s"),
        ("   phases: start / launch / bootstrap", ("P1_phase_start_s", "P1_phase_launch_s", "P1_phase_bootstrap_s")),
        ("   floor: bootstrap.sh on all hosts, no SSH", "P1_floor_bootstrap_s"),
        ("   warm Locust ready on all, after up exits", "P1_warm_ready_after_up_s"),
        ("   hosts' CPU-s under sshd (SSH + bootstrap.sh)", "P1_hosts_sshd_cpu_s"),
        ("P2 run, UI mode, until all connected (s)", "P2_run_ui_s"),
        ("   phases: start / sync+kill / start+wait", ("P2_phase_start_s", "P2_phase_sync_s", "P2_phase_wait_workers_s")),
        ("   floor: warm Locust started on hosts, no SSH", "P2_floor_all_connected_s"),
        ("   floor: cold Locust (imports), no SSH", "P2_floor_cold_all_connected_s"),
        ("P2 run --headless, until spawn sent to all (s)", "P2_headless_started_s"),
        ("   end of load -> swarm exits with results", "P2_headless_end_to_exit_s"),
        ("killall of a running stack (s)", "killall_s"),
        ("   floor: the same kill command, no SSH", "killall_floor_s"),
        ("P3 5 MB bootstrap/: bootstrap phase (s)", "P3_bootstrap_phase_s"),
        ("   floor: unpack + script on hosts, no SSH", "P3_floor_untar_s"),
        ("   the same through OpenSSH's ssh, in parallel", "P3_floor_openssh_s"),
        ("   hosts' CPU-s under sshd (SSH + unpacking)", "P3_hosts_sshd_cpu_s"),
        ("down (s) / net of emulated host removal", ("down_s", "down_net_of_emulation_s")),
        ("P6 20 Mbit/s uplink: up master (s)", "P6_up_master_s"),
        ("   up workers -n N (s)", "P6_up_workers_s"),
        ("   of which moto creating hosts / bootstrap phase", ("P6_up_workers_emulated_launch_s",
                                                            "P6_up_workers_bootstrap_phase_s")),
        ("   MB into the lab: tree / up master / up workers", ("P6_tree_mb", "P6_up_master_mb", "P6_up_workers_mb")),
        ("   x the tree: up master / up workers", ("P6_up_master_x_tree", "P6_up_workers_x_tree")),
    ]
    w, cw = 48, 24
    rows = [(label, key) for label, key in rows
            if any(k in med for k in (key if isinstance(key, tuple) else (key,)))]
    if rows:
        print()
        print(f"{'metric (median of ' + str(args.reps) + ')':<{w}}" + "".join(f"{'N=' + n:>{cw}}" for n in sizes))
        print("-" * (w + cw * len(sizes)))
    for label, key in rows:
        keys = key if isinstance(key, tuple) else (key,)
        cells = []
        for n in sizes:
            vals = [med.get(k, {}).get(n) for k in keys]
            cells.append(" / ".join(_fmt(v) for v in vals))
        print(f"{label:<{w}}" + "".join(f"{c:>{cw}}" for c in cells))
        if keys == ("P2_headless_end_to_exit_s",) and "P2_headless_end_phases_s" in med:
            cells = []
            for n in sizes:
                d = med["P2_headless_end_phases_s"].get(n) or {}
                cells.append(" / ".join(_fmt(d.get(k)) for k in ("autoquit", "locust_exit",
                                                                 "swarm_after_exit")))
            print(f"{'   = autoquit / Locust exits / swarm after':<{w}}"
                  + "".join(f"{c:>{cw}}" for c in cells))
            cells = []
            for n in sizes:
                d = med["P2_headless_end_phases_s"].get(n) or {}
                cells.append(" / ".join(_fmt(d.get(k)) for k in ("quit", "shutdown")))
            print(f"{'   Locust exits = its quit / its shutdown':<{w}}"
                  + "".join(f"{c:>{cw}}" for c in cells))
    for label, ka, kb in (("P1 bootstrap phase minus its floor", "P1_phase_bootstrap_s", "P1_floor_bootstrap_s"),
                        ("P2 run (UI) minus its floor", "P2_run_ui_s", "P2_floor_all_connected_s"),
                        ("P2 lower bound: start phase + warm floor", "P2_phase_start_s",
                         "-P2_floor_all_connected_s"),
                        ("P3 bootstrap phase minus its floor", "P3_bootstrap_phase_s", "P3_floor_untar_s")):
        sign, kb = (1, kb[1:]) if kb.startswith("-") else (-1, kb)  # "-key": a sum
        if ka in med and kb in med:
            cells = [_fmt(med[ka][n] + sign * med[kb][n])
                     if med[ka].get(n) is not None and med[kb].get(n) is not None else "-"
                     for n in sizes]
            print(f"{label:<{w}}" + "".join(f"{c:>{cw}}" for c in cells))
    for key, label in (("P1_ssh_per_host", "P1 per worker: conns/logins/execs"),
                       ("P2_ssh_per_host", "P2 per worker: conns/logins/execs"),
                       ("P3_ssh_per_host", "P3 per worker: conns/logins/execs/MB in")):
        if key in med:
            cells = []
            for n in sizes:
                d = med[key].get(n)
                if not d:
                    cells.append("-")
                    continue
                c = f"{d['tcp']:g}/{d['logins']:g}/{d['execs']:g}"
                if key == "P3_ssh_per_host":
                    c += f"/{d['bytes_in'] / 1e6:.1f}"
                cells.append(c)
            print(f"{label:<{w}}" + "".join(f"{c:>{cw}}" for c in cells))
    if "P4_rps_nginx" in med:
        m = med["P4_rps_nginx"]
        ml = med.get("P4_rps_locust", {})
        mc = med.get("P4_req_per_cpu_s", {})
        kinds = ("swarm", "bare", "dist")
        print(f"{'P4 1 worker process':<{w}}{'swarm':>{cw}}{'bare locust':>{cw}}{'locust dist, no swarm':>{cw}}")
        for label, d, nd in (("   requests/s (counted by nginx)", m, 0),
                             ("   requests/s (as Locust counts them)", ml, 0),
                             ("   requests per CPU-second of the process", mc, 0)):
            print(f"{label:<{w}}" + "".join(f"{_fmt(d.get(k), nd):>{cw}}" for k in kinds))
    p5 = [(k[3:], v) for k, v in med.items() if k.startswith("P5 ")]
    if p5:
        hi = sizes[-1]
        print(f"\nP5 footprint of the swarm process at N={hi} (median of {args.reps})")
        print(f"   {'command':<28}{'peak RSS MB':>12}{'CPU s':>8}{'CPU s/host':>12}{'wall s':>8}{'AWS calls':>11}")
        for name, per in p5:
            d = per.get(hi) or {}
            print(f"   {name:<28}{_fmt(d.get('rss_mb'), 1):>12}{_fmt(d.get('cpu_s')):>8}"
                  f"{_fmt(d.get('cpu_per_host_s'), 3):>12}{_fmt(d.get('wall_s')):>8}"
                  f"{_fmt(d.get('aws_calls'), 0):>11}")
    _print_cost(med)
    _print_p7(b, med, args)
    print("\ngoals:")
    for gl in summary["goals"]:
        mark = "info" if gl.get("info") else {True: "PASS", False: "MISS", None: "n/a "}[gl["ok"]]
        v = gl["value"]
        vs = _fmt(v, 2) if not isinstance(v, str) else v
        note = f"  ({gl['note']})" if gl["note"] else ""
        print(f"  {mark}  {gl['goal']:<4} {gl['target']}: {vs} (limit {gl['limit']}){note}")
    la = b.load_samples
    if la:
        print(f"\nmachine: {os.cpu_count()} CPUs; 1-min load average before each cycle: "
              f"min {min(x[0] for x in la):.2f}, median {median([x[0] for x in la]):.2f}, "
              f"max {max(x[0] for x in la):.2f}")


def _print_cost(med: dict[str, Any]) -> None:
    """The controller's cost per host of every command, at every N it was measured at."""
    rows = [(k[2:], v) for k, v in med.items() if k.startswith("C ")]
    if not rows:
        return
    ns = sorted({n for _, per in rows for n in per}, key=int)
    w, cw = 30, 27
    print("\ncontroller cost per host of the stack, per command: CPU-s / TCP conns / execs / KB sent")
    print(f"   {'command':<{w}}" + "".join(f"{'N=' + n:>{cw}}" for n in ns))
    for name, per in rows:
        cells = []
        for n in ns:
            d = per.get(n)
            cells.append("-" if not d else
                         f"{d['cpu_per_host_s']:.3f} / {d['tcp_per_host']:.1f} / "
                         f"{d['execs_per_host']:.1f} / {d['kb_per_host']:.0f}")
        print(f"   {name:<{w}}" + "".join(f"{c:>{cw}}" for c in cells))


def _print_p7(b: Bench, med: dict[str, Any], args) -> None:
    p7 = [(k[3:], v) for k, v in med.items() if k.startswith("P7 ")]
    if not p7:
        return
    n = str(getattr(args, "p7_n", 100))
    codes = {c["name"]: c["code"] for c in (getattr(b, "results", {}).get("P7") or {}).get("commands", [])}
    print(f"\nP7 N={n} workers: the swarm process per command")
    print(f"   {'command':<28}{'exit':>6}{'peak RSS MB':>12}{'CPU s':>8}{'CPU s/host':>12}{'wall s':>8}")
    for name, per in p7:
        d = per.get(n) or {}
        print(f"   {name:<28}{_fmt(codes.get(name), 0):>6}{_fmt(d.get('rss_mb'), 1):>12}"
              f"{_fmt(d.get('cpu_s')):>8}{_fmt(d.get('cpu_per_host_s'), 3):>12}{_fmt(d.get('wall_s')):>8}")
