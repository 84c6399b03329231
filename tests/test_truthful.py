"""The numbers a run reports are the numbers the target saw, on a busy machine.

Five headless runs in a row on emulated EC2 (a master and three workers, each a real sshd and
real Locust) while CPU burners keep this machine's cores busy, as CI runners and laptops are.
Each time, the requests swarm reports (its summary, Locust's stats CSV and stats.json) are at
most the target's count and at least that count minus the users (one request in flight per
user may be cut off at stop)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import swarm
from tests.reliability import ec2_stack

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
    assert swarm("up", "master", cwd=workdir, env=env, timeout=300).code == 0
    res = swarm("up", "workers", "-n", "3", cwd=workdir, env=env, timeout=300)
    assert res.code == 0, res.err
    try:
        seen = []
        for i in range(5):
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
