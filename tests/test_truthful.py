"""The numbers a run reports are the numbers the target saw, on a busy machine, on every
provider.

Five headless runs in a row on emulated EC2 (a master and three workers, each a real sshd and
real Locust) while CPU burners keep this machine's cores busy, as CI runners and laptops are;
three on `hosts` and three on `local` the same way. Each time, the requests swarm reports
(its summary, Locust's stats CSV and stats.json) are at most the target's count and at least
that count minus the users (one request in flight per user may be cut off at stop)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import swarm
from tests.reliability import ec2_stack, fast_bootstrap

USERS = 30
BURN_S = 600  # a burner's own bound: it ends even if this test is killed


@pytest.fixture
def busy_cpus():
    burners = [subprocess.Popen([sys.executable, "-c",
                                 f"import time\nend = time.time() + {BURN_S}\n"
                                 "while time.time() < end: pass\n"])
               for _ in range(os.cpu_count() or 2)]
    try:
        yield burners
    finally:
        for b in burners:
            b.kill()
            b.wait(timeout=10)


def test_five_runs_on_a_busy_machine_report_what_the_target_served(
        workdir, cli_env, ec2_env, bridge_target, busy_cpus):
    env = ec2_stack(workdir, cli_env, ec2_env, "truth")
    runs_report_what_was_served(workdir, env, bridge_target, 5)


def test_runs_on_hosts_report_what_the_target_served(workdir, cli_env, emulated_hosts,
                                                     bridge_target, busy_cpus):
    hs = emulated_hosts(4)
    master, *workers = hs.hosts
    names = ", ".join(f'"root@{w.ip}"' for w in workers)
    (workdir / "swarm.toml").write_text(
        f'[stack]\nname = "truth"\nprovider = "hosts"\n'
        f'[hosts]\nmaster = "root@{master.ip}"\nworkers = [{names}]\nssh_key = "{hs.key_path}"\n'
        f"[locust]\nprocesses = 1\n")
    fast_bootstrap(workdir)
    runs_report_what_was_served(workdir, cli_env, bridge_target, 3)


def test_local_runs_report_what_the_target_served(workdir, cli_env, local_toml, target,
                                                  busy_cpus):
    local_toml(name="truth")
    runs_report_what_was_served(workdir, cli_env, target, 3)


def runs_report_what_was_served(workdir, env, target, runs: int) -> None:
    assert swarm("up", "master", cwd=workdir, env=env, timeout=300).code == 0
    res = swarm("up", "workers", "-n", "3", cwd=workdir, env=env, timeout=300)
    assert res.code == 0, res.err
    bridge_target = target
    try:
        seen = []
        for i in range(runs):
            before = bridge_target.total()
            res = swarm("run", "-H", bridge_target.url, "-f", "viral_load.py", "--headless",
                        "-u", str(USERS), "-r", str(USERS), "-t", "6s",
                        cwd=workdir, env=env, timeout=300)
            served = bridge_target.total() - before
            assert res.code == 0, res.err
            out = sorted((workdir / "results" / "truth").iterdir())[-1]
            record = json.loads((out / "run.json").read_text())
            reported = record["summary"]["total"]["requests"]
            in_json = sum(e["num_requests"] for e in json.loads((out / "stats.json").read_text()))
            seen.append((reported, in_json, served))
            assert served - USERS <= reported <= served, f"run {i + 1}: {seen}"
            assert in_json == reported, f"run {i + 1}: the CSV and stats.json differ: {seen}"
            assert str(reported) in res.out  # the summary the user reads says the same
    finally:
        assert swarm("down", cwd=workdir, env=env, timeout=300).code == 0
