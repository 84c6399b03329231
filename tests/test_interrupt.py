"""Ctrl-C during a headless run stops the load everywhere and brings back what it did.

On local and on emulated EC2, the CLI in a subprocess: Ctrl-C once the target sees the load;
swarm exits 130 saying where the partial results are, no request reaches the target 3 s
after, no Locust test process is left on any node, the stats CSV has the requests made so far
and run.json says `interrupted`."""
from __future__ import annotations

import csv
import json
import signal
import time
import xml.etree.ElementTree as ET

from tests.reliability import ec2_stack, finish, locust_pids, poll, start
from tests.helpers import processes_under, swarm

RUN = ["-f", "viral_load.py", "--headless", "-u", "10", "-r", "10", "-t", "5m",
       "--check", "p95<1s", "--junit", "junit.xml"]


def interrupt_run(workdir, env, target, tmp_path, stack: str) -> tuple[str, dict, int]:
    """Start a 5-minute run, Ctrl-C it once the target sees the load -> (stderr, run.json,
    requests in the stats CSV)."""
    proc, _, err = start(["run", "-H", target.url, *RUN], workdir, env, tmp_path)
    try:
        poll(lambda: target.total() > 50, timeout=120, interval=0.1, what="the load to arrive")
        proc.send_signal(signal.SIGINT)
        code = finish(proc, timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = err.read_text()
    assert code == 130, text
    assert "Traceback" not in text, text
    last = text.strip().splitlines()[-1]
    assert last.startswith("interrupted: the load is stopped on every node; partial results in "), text
    seen = target.total()
    time.sleep(3)
    assert target.total() == seen, "requests reached the target after swarm said it stopped"
    out = sorted((workdir / "results" / stack).iterdir())[-1]
    assert str(out.relative_to(workdir)) in last
    record = json.loads((out / "run.json").read_text())
    rows = list(csv.DictReader((out / "locust_stats.csv").open()))
    total = next(int(r["Request Count"]) for r in rows if r["Name"] == "Aggregated")
    return text, record, total


def test_ctrl_c_stops_a_local_run_and_keeps_its_results(workdir, cli_env, local_toml, target,
                                                        tmp_path):
    local_toml()
    assert swarm("up", "master", cwd=workdir, env=cli_env).code == 0
    assert swarm("up", "workers", "-n", "2", cwd=workdir, env=cli_env).code == 0
    try:
        _, record, total = interrupt_run(workdir, cli_env, target, tmp_path, "t")
        assert (record["verdict"], record["swarm_exit_code"]) == ("interrupted", 130)
        assert 0 < total <= target.total()
        assert record["summary"]["total"]["requests"] == total
        left = [p for p in processes_under(workdir / ".." / "state") if "swarm-warm" not in p
                and "locust" in p]
        assert left == [], left
        res = swarm("results", "--last", cwd=workdir, env=cli_env)
        assert "verdict: interrupted" in res.err, res.err
        # CI's report: not judged, so no pass: the run an error case, its check skipped
        suite = ET.parse(workdir / "junit.xml").getroot().find("testsuite")
        assert (suite.get("errors"), suite.get("skipped"), suite.get("failures")) == ("1", "1", "0")
        err = suite.find("testcase[@name='locust run']/error")
        assert err.get("message").startswith("locust run: interrupted (Ctrl-C): not judged"), \
            err.get("message")
    finally:
        swarm("down", cwd=workdir, env=cli_env)


def test_ctrl_c_stops_an_ec2_run_on_every_node(workdir, cli_env, ec2_env, emulated_ec2,
                                               bridge_target, tmp_path):
    env = ec2_stack(workdir, cli_env, ec2_env, "intr")
    assert swarm("up", "master", cwd=workdir, env=env, timeout=300).code == 0
    assert swarm("up", "workers", "-n", "2", cwd=workdir, env=env, timeout=300).code == 0
    try:
        _, record, total = interrupt_run(workdir, env, bridge_target, tmp_path, "intr")
        assert record["verdict"] == "interrupted"
        # the workers' last figures reached the master before it wrote them
        assert bridge_target.total() - 10 <= total <= bridge_target.total()
        for host in emulated_ec2.hosts.values():
            assert locust_pids(host) == [], host.name
    finally:
        assert swarm("down", cwd=workdir, env=env, timeout=300).code == 0
