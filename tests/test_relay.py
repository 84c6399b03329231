"""Each tree crosses the controller's link once (issue 18, Deliver 1), on emulated EC2 with the
CLI in a subprocess: bootstrap/ (3 MB of random bytes) goes to the master at `up master`, and
the workers of `up workers` get it from the master's relay; locustfiles/ goes to the master at
the first `run` and not again while unchanged; a changed locustfile reaches every worker (the
run's stats show its new task name). What the controller sent each host is counted by the
counting rule per host IP on the controller's side (iptables OUTPUT to port 22, removed after):
sshd's own "Transferred" line is not logged for a connection reset at swarm's exit.
A worker whose packets to the relay port are dropped (a raw-table rule in the master's
namespace, removed after) gets the tree from the controller, and the command says so."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.helpers import swarm
from tests.reliability import ec2_stack

STACK = "relay"
TREE = 3_000_000
SMALL = 300_000  # what commands and their answers cost a host: far below the tree
LOCUSTFILE = """from locust import HttpUser, constant, task


class Probe(HttpUser):
    wait_time = constant(0.2)

    @task
    def probe(self):
        self.client.get("/health", name="{name}")
"""


COMMENT = "swarm-test-relay"
HOST_IPS = [f"10.77.1.{i}" for i in range(2, 40)]   # where moto's launches land in the subnet


def _rule(ip: str) -> list[str]:
    return ["OUTPUT", "-d", f"{ip}/32", "-p", "tcp", "--dport", "22", "-m", "comment",
            "--comment", COMMENT]


@pytest.fixture
def ssh_counters():
    """Counting rules (no target) on the controller's side, one per host IP: what this
    machine sends to each host's sshd; bridged traffic between hosts never crosses them."""
    added = []
    try:
        for ip in HOST_IPS:
            subprocess.run(["iptables", "-I", *_rule(ip)], check=True, capture_output=True)
            added.append(ip)
        yield
    finally:
        for ip in added:
            subprocess.run(["iptables", "-D", *_rule(ip)], check=False, capture_output=True)


def bytes_in(host) -> int:
    """Bytes the controller has sent to the host's sshd so far (its counting rule)."""
    out = subprocess.run(["iptables", "-nvx", "-L", "OUTPUT"], check=True, capture_output=True,
                         text=True).stdout
    for line in out.splitlines():
        f = line.split()
        if COMMENT in line and f"{host.ip}" in f:
            return int(f[1])
    raise AssertionError(f"no counting rule for {host.ip}")


def execs(host) -> int:
    """Commands the host's sshd has started so far (LogLevel VERBOSE logs each)."""
    return host.log_path.read_text(errors="replace").count("Starting session: command")


def hosts_by_name(emulated_ec2, workdir, env) -> dict:
    res = swarm("status", "--json", cwd=workdir, env=env)
    assert res.code == 0, res.err
    return {n["name"]: emulated_ec2.host_for(n["id"]) for n in json.loads(res.out)["nodes"]}


@pytest.fixture
def env(workdir, cli_env, ec2_env, ssh_counters):
    env = ec2_stack(workdir, cli_env, ec2_env, STACK)
    (workdir / "bootstrap" / "big.bin").write_bytes(os.urandom(TREE))
    (workdir / "locustfiles" / "relay_probe.py").write_text(LOCUSTFILE.format(name="v1-task"))
    (workdir / "locustfiles" / "data.bin").write_bytes(os.urandom(TREE // 3))
    yield env
    swarm("down", cwd=workdir, env=env, timeout=180)


def run(workdir, env, target, users: int):
    res = swarm("run", "-H", target.url, "-f", "relay_probe.py", "--headless", "-u", str(users),
                "-r", str(users), "-t", "3s", cwd=workdir, env=env, timeout=240)
    assert res.code == 0, res.out + res.err
    return res


def test_each_tree_crosses_the_controllers_link_once(workdir, env, emulated_ec2, bridge_target):
    assert swarm("up", "master", cwd=workdir, env=env, timeout=180).code == 0
    (master,) = hosts_by_name(emulated_ec2, workdir, env).values()
    m0 = bytes_in(master)
    assert m0 > TREE                                     # the master got bootstrap/ once

    up = swarm("up", "workers", "-n", "3", cwd=workdir, env=env, timeout=240)
    assert up.code == 0, up.out + up.err
    assert "relay" not in up.out + up.err                # no fallback, nothing to say
    hosts = hosts_by_name(emulated_ec2, workdir, env)
    workers = [hosts[f"worker-{i}"] for i in (1, 2, 3)]
    big = (workdir / "bootstrap" / "big.bin").read_bytes()
    for w in workers:
        assert "bootstrap done role=worker" in (w.home / "swarm/bootstrap.log").read_text()
        assert (w.home / "swarm/bootstrap/big.bin").read_bytes() == big
        assert bytes_in(w) < SMALL, w.name
    m1 = bytes_in(master)
    assert m1 - m0 < SMALL                               # unchanged: not sent to it again

    up = swarm("up", "workers", "-n", "4", cwd=workdir, env=env, timeout=240)
    assert up.code == 0, up.out + up.err
    w4 = hosts_by_name(emulated_ec2, workdir, env)["worker-4"]
    assert "bootstrap done role=worker" in (w4.home / "swarm/bootstrap.log").read_text()
    assert bytes_in(w4) < SMALL
    m2 = bytes_in(master)
    assert m2 - m1 < SMALL
    workers.append(w4)

    # run: locustfiles/ to the master once, to the workers from its relay, each worker
    # fetching and starting in the exec that stops its old Locust
    before = {h.name: bytes_in(h) for h in [master, *workers]}
    execs0 = {w.name: execs(w) for w in workers}
    first = run(workdir, env, bridge_target, 4)
    assert "v1-task" in first.out
    after = {h.name: bytes_in(h) for h in [master, *workers]}
    assert after[master.name] - before[master.name] > TREE // 3
    assert all(after[w.name] - before[w.name] < SMALL for w in workers)
    # (the other exec: the end of the headless run fetches each worker's log)
    assert {w.name: execs(w) - execs0[w.name] for w in workers} == {w.name: 2 for w in workers}

    # unchanged: no tar to anyone
    again = run(workdir, env, bridge_target, 4)
    assert "v1-task" in again.out
    latest = {h.name: bytes_in(h) for h in [master, *workers]}
    assert all(latest[h] - after[h] < SMALL for h in latest), (latest, after)

    # changed: every worker runs the new task, the bytes to each worker still small
    (workdir / "locustfiles" / "relay_probe.py").write_text(LOCUSTFILE.format(name="v2-task"))
    changed = run(workdir, env, bridge_target, 4)
    assert "v2-task" in changed.out and "v1-task" not in changed.out
    now = {h.name: bytes_in(h) for h in [master, *workers]}
    assert all(now[w.name] - latest[w.name] < SMALL for w in workers)
    for w in workers:
        assert "v2-task" in (w.home / "swarm/locustfiles/relay_probe.py").read_text()


def test_a_worker_that_cannot_reach_the_relay_gets_the_tree_from_here(
        workdir, env, emulated_ec2, bridge_target):
    assert swarm("up", "master", cwd=workdir, env=env, timeout=180).code == 0
    (master,) = hosts_by_name(emulated_ec2, workdir, env).values()
    # up: the relay port dropped for every worker to come: each is bootstrapped from here
    everyone = "PREROUTING -s 10.77.1.0/24 -p tcp --dport 5558 -j DROP"
    master.exec(f"iptables -t raw -I {everyone}", check=True)
    try:
        up = swarm("up", "workers", "-n", "2", cwd=workdir, env=env, timeout=240)
    finally:
        master.exec(f"iptables -t raw -D {everyone}", check=True)
    assert up.code == 0, up.out + up.err
    assert (f"2 of 2 workers could not reach the master's relay at {master.ip}:5558: "
            "sent from here") in up.out + up.err
    hosts = hosts_by_name(emulated_ec2, workdir, env)
    blocked, free = hosts["worker-1"], hosts["worker-2"]
    for w in (blocked, free):
        assert "bootstrap done role=worker" in (w.home / "swarm/bootstrap.log").read_text()
        assert bytes_in(w) > TREE

    # run: only worker-1 cut off from the relay
    rule = f"PREROUTING -s {blocked.ip}/32 -p tcp --dport 5558 -j DROP"
    master.exec(f"iptables -t raw -I {rule}", check=True)
    try:
        before = {h.name: bytes_in(h) for h in (blocked, free)}
        res = run(workdir, env, bridge_target, 2)
        assert "v1-task" in res.out
        line = f"1 of 2 workers could not reach the master's relay at {master.ip}:5558: " \
               "sent from here"
        assert line in res.out + res.err
        assert bytes_in(blocked) - before[blocked.name] > TREE // 3    # sent from here
        assert bytes_in(free) - before[free.name] < SMALL
        assert (blocked.home / "swarm/locustfiles/relay_probe.py").is_file()
    finally:
        master.exec(f"iptables -t raw -D {rule}", check=True)
