"""The full cycle over real SSH: moto as EC2 (or the hosts provider), one network namespace with
a real sshd per machine, real Locust, a real HTTP target on the lab bridge."""
import json
import os
import re
import signal
from pathlib import Path

import pytest

from tests.helpers import assert_error_line, controller_until_exit, swarm
from tests.reliability import locust_pids, poll


def write_toml(workdir: Path, body: str) -> None:
    (workdir / "swarm.toml").write_text(body)


def hosts_toml(workdir, master, workers, key, extra=""):
    ws = ", ".join(f'"root@{w.ip}"' for w in workers)
    write_toml(workdir, f'[stack]\nname = "h"\nprovider = "hosts"\n'
                        f'[hosts]\nmaster = "root@{master.ip}"\nworkers = [{ws}]\nssh_key = "{key}"\n'
                        f'[locust]\nprocesses = 1\n{extra}')


def ec2_toml(workdir, subnet_id, name="e2e", extra=""):
    write_toml(workdir, f'[stack]\nname = "{name}"\nprovider = "ec2"\n'
                        f'[ec2]\nregion = "us-east-1"\nami = "al2023"\nsubnet_id = "{subnet_id}"\n'
                        f'ssh_cidr = "10.77.0.0/16"\nconnect = "private"\nssh_user = "root"\n'
                        f'[locust]\nprocesses = 1\n[bootstrap]\nssh_timeout = 20\n{extra}')


def locust_procs(hosts) -> dict[str, list[int]]:
    return {h.ip: locust_pids(h) for h in hosts}


def warm_pids(host) -> list[int]:
    """The host's warm (pre-imported) Locust: named swarm-warm, waiting to fork Locust."""
    return [p for p in host.pids() if _comm(p) == "swarm-warm"]


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def latest_run(workdir: Path, stack: str) -> Path:
    return sorted((workdir / "results" / stack).iterdir())[-1]


def test_ec2_headline_flow(workdir, cli_env, ec2_env, emulated_ec2, bridge_target):
    env = {**cli_env, **ec2_env.env}
    ec2_toml(workdir, ec2_env.subnet_id)
    res = swarm("up", "master", cwd=workdir, env=env, timeout=180)
    assert res.code == 0, res.err
    res = swarm("up", "workers", "-n", "3", cwd=workdir, env=env, timeout=180)
    assert res.code == 0, res.err
    assert res.out.count(" ok") >= 3, res.out
    hosts = list(emulated_ec2.hosts.values())
    assert len(hosts) == 4
    for h in hosts:   # bootstrapped: the script ran there and logged, and took the skip path
        log = (h.home / "swarm" / "bootstrap.log").read_text()
        assert "bootstrap done" in log, log

    res = swarm("run", "-H", bridge_target.url, "-f", "viral_load.py", "--headless", "-u", "30",
                "-r", "10", "-t", "10s", cwd=workdir, env=env, timeout=240)
    assert res.code == 0, res.err
    assert "3 of 3 worker process(es) connected" in res.err
    out = latest_run(workdir, "e2e")
    for name in ("locust_stats.csv", "locust_stats_history.csv", "locust_failures.csv",
                 "report.html", "stats.json", "run.json", "logs/master.log", "logs/worker-3.log"):
        assert (out / name).is_file(), name
    record = json.loads((out / "run.json").read_text())
    claimed = record["summary"]["total"]["requests"]
    assert claimed > 100 and record["summary"]["total"]["failures"] == 0
    assert abs(bridge_target.total() - claimed) <= max(1, claimed * 0.01)
    assert record["provider"] == "ec2" and record["instances"]["workers"] == 3

    res = swarm("killall", cwd=workdir, env=env)
    assert res.code == 0, res.err
    assert all(p == [] for p in locust_procs(hosts).values()), locust_procs(hosts)

    res = swarm("down", cwd=workdir, env=env, timeout=120)
    assert res.code == 0, res.err
    assert emulated_ec2.hosts == {}
    ec2 = emulated_ec2.client()
    live = [i for r in ec2.describe_instances(Filters=[{"Name": "tag:swarm:stack", "Values": ["e2e"]}])["Reservations"]
            for i in r["Instances"] if i["State"]["Name"] != "terminated"]
    assert live == []
    assert [g for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] == "swarm-e2e"] == []
    assert [k for k in ec2.describe_key_pairs()["KeyPairs"] if k["KeyName"] == "swarm-e2e"] == []


def test_hosts_provider_cycle_and_a_changed_locustfile(workdir, cli_env, emulated_hosts, bridge_target):
    hs = emulated_hosts(3)
    master, *workers = hs.hosts
    hosts_toml(workdir, master, workers, hs.key_path)
    assert swarm("up", "master", cwd=workdir, env=cli_env, timeout=120).code == 0
    res = swarm("up", "workers", "-n", "2", cwd=workdir, env=cli_env, timeout=120)
    assert res.code == 0, res.err
    res = swarm("run", "-H", bridge_target.url, "-f", "viral_load.py", "--headless", "-u", "10",
                "-r", "10", "-t", "4s", cwd=workdir, env=cli_env, timeout=180)
    assert res.code == 0, res.err
    assert "2 of 2 worker process(es) connected" in res.err
    assert "GET /kandus/{id}" in bridge_target.counts()

    # Change the locustfile: the next run must ship and use the new one.
    bridge_target.reset()
    (workdir / "locustfiles" / "viral_load.py").write_text(
        "from locust import HttpUser, task, constant\n\n"
        "class Health(HttpUser):\n    wait_time = constant(0.2)\n\n"
        "    @task\n    def health(self):\n        self.client.get('/health')\n")
    res = swarm("run", "-H", bridge_target.url, "-f", "viral_load.py", "--headless", "-u", "4",
                "-r", "4", "-t", "3s", cwd=workdir, env=cli_env, timeout=180)
    assert res.code == 0, res.err
    assert set(bridge_target.counts()) == {"GET /health"}, bridge_target.counts()
    assert "/health" in (latest_run(workdir, "h") / "locust_stats.csv").read_text()

    # Every host keeps one warm Locust (imported once, after `up`) and the runs were forked
    # from it: a UI run keeps Locust up to look at it. Kill one host's warm Locust: that host
    # starts cold, and gets a new warm one for the next run.
    assert all(len(warm_pids(h)) == 1 for h in hs.hosts), {h.ip: warm_pids(h) for h in hs.hosts}
    res = swarm("run", "-H", bridge_target.url, "-f", "viral_load.py", "-u", "2", cwd=workdir,
                env=cli_env, timeout=120)
    assert res.code == 0, res.err
    for h in hs.hosts:
        pids = locust_pids(h)
        assert len(pids) == 1 and "swarm-warm.py" in _cmdline(pids[0]), (h.ip, pids)
    dead = warm_pids(workers[0])[0]
    os.kill(dead, signal.SIGKILL)
    poll(lambda: dead not in warm_pids(workers[0]), timeout=10, what="the warm Locust to die")
    res = swarm("run", "-H", bridge_target.url, "-f", "viral_load.py", "-u", "2", cwd=workdir,
                env=cli_env, timeout=120)
    assert res.code == 0, res.err
    assert "2 of 2 worker process(es) connected" in res.err
    cold = locust_pids(workers[0])
    assert len(cold) == 1 and "swarm-warm.py" not in _cmdline(cold[0]), cold
    poll(lambda: len(warm_pids(workers[0])) == 1, timeout=30, what="a new warm Locust")

    assert swarm("killall", cwd=workdir, env=cli_env).code == 0
    assert all(p == [] for p in locust_procs(hs.hosts).values())
    assert all(len(warm_pids(h)) == 1 for h in hs.hosts)    # killall keeps the warm ones
    assert swarm("down", cwd=workdir, env=cli_env, timeout=120).code == 0
    for h in hs.hosts:     # remote dir removed, warm Locust stopped; the machines keep running
        assert not (h.home / "swarm").exists()
        assert warm_pids(h) == [] and locust_procs([h]) == {h.ip: []}
        assert h.running


def test_a_host_whose_sshd_never_answers(workdir, cli_env, emulated_hosts):
    live = emulated_hosts(2)
    dead = emulated_hosts(1, dead=True)
    master, w1 = live.hosts
    hosts_toml(workdir, master, [w1, dead.hosts[0]], live.key_path,
               extra="[bootstrap]\nssh_timeout = 4\n")
    assert swarm("up", "master", cwd=workdir, env=cli_env, timeout=120).code == 0
    res = swarm("up", "workers", "-n", "2", cwd=workdir, env=cli_env, timeout=120)
    assert res.code == 1
    assert res.err_lines[-1].startswith("error: bootstrap failed on 1 of 2 node(s)"), res.err
    assert "paramiko" not in res.err and "Traceback" not in res.err, res.err
    assert re.search(rf"{re.escape(dead.hosts[0].ip)}.*did not answer within 4s", res.out), res.out
    assert "bootstrap done" in (w1.home / "swarm" / "bootstrap.log").read_text()
    names = [n["name"] for n in json.loads(swarm("status", "--json", cwd=workdir, env=cli_env).out)["nodes"]]
    assert names == ["master", "worker-1", "worker-2"]    # the failed one stays listed
    swarm("down", cwd=workdir, env=cli_env, timeout=120)


def test_bootstrap_failing_on_one_of_three(workdir, cli_env, emulated_hosts, bridge_target):
    hs = emulated_hosts(3)
    master, bad, good = hs.hosts
    hosts_toml(workdir, master, [bad, good], hs.key_path)
    (workdir / "bootstrap" / "bootstrap.sh").write_text(
        "#!/usr/bin/env bash\necho 'step 1: checking disk'\n"
        "if [ -f \"$HOME/fail-bootstrap\" ]; then echo 'cannot install: disk on fire'; exit 3; fi\n"
        "echo 'bootstrap done'\n")
    (bad.home / "fail-bootstrap").write_text("")
    assert swarm("up", "master", cwd=workdir, env=cli_env, timeout=120).code == 0
    res = swarm("up", "workers", "-n", "2", cwd=workdir, env=cli_env, timeout=120)
    assert res.code == 1
    assert "bootstrap failed (exit 3)" in res.out and "disk on fire" in res.out
    assert res.err_lines[-1].startswith("error: bootstrap failed on 1 of 2 node(s)")
    # The other two are usable: a run on the stack works.
    res = swarm("run", "-H", bridge_target.url, "-f", "signups.py", "--headless", "-u", "2",
                "-t", "2s", cwd=workdir, env=cli_env, timeout=180)
    assert res.code == 0, res.err
    swarm("down", cwd=workdir, env=cli_env, timeout=120)


def test_a_changed_host_key_is_refused(workdir, cli_env, emulated_hosts, bridge_target, tmp_path):
    hs = emulated_hosts(2)
    master, worker = hs.hosts
    hosts_toml(workdir, master, [worker], hs.key_path)
    assert swarm("up", "master", cwd=workdir, env=cli_env, timeout=120).code == 0
    assert swarm("up", "workers", "-n", "1", cwd=workdir, env=cli_env, timeout=120).code == 0
    known = tmp_path / "state" / "hosts" / "h" / "known_hosts"
    before = known.read_text()
    assert worker.ip in before and master.ip in before
    worker.regen_host_key()
    res = swarm("run", "-H", bridge_target.url, "-f", "signups.py", "--headless", "-t", "2s",
                "--require-all", cwd=workdir, env=cli_env, timeout=120)
    assert_error_line(res, 1, "host key changed", worker.ip)
    assert known.read_text() == before            # never silently accepted
    assert all(p == [] for p in locust_procs(hs.hosts).values())   # nothing started
    res = swarm("logs", "worker-1", cwd=workdir, env=cli_env)
    assert res.code == 1 and "host key changed" in res.err



def test_run_after_exit_waits_for_the_controller_to_exit(emulated_hosts, tmp_path):
    """What `up` relies on to start the hosts' warm Locusts only once it has exited: the command
    is in place (its shell started) but runs only when the controller process is gone, even
    after the runner was closed, and it survives the connection it came from."""
    hs = emulated_hosts(1)
    (h,) = hs.hosts
    marker = h.home / "deferred.txt"
    controller = f"""
import sys
from swarm.remote.ssh import SSHRunner
r = SSHRunner({h.ip!r}, user="root", key_file={str(hs.key_path)!r},
              known_hosts={str(tmp_path / "known_hosts")!r})
r.wait_ready(20)
r.run_after_exit("echo noisy; echo noisy >&2; echo ran >deferred.txt")  # no channel to print to
r.run("true", timeout=20)       # the connection is still usable meanwhile
r.close()                       # closing the runner is not the signal; exiting is
print("closed", flush=True)
sys.stdin.readline()
"""
    with controller_until_exit(controller) as exit_now:
        poll(lambda: any(_comm(p) == "cat" for p in h.pids()), timeout=10, what="the waiting shell")
        assert not marker.exists()
        exit_now()
        poll(lambda: marker.exists() and marker.read_text() == "ran\n", timeout=10,
             what="the deferred command, after the controller exited")


def test_wait_ready_retries_until_sshd_answers(emulated_hosts, tmp_path):
    """A machine whose sshd is not up yet (refused), then is: wait_ready keeps trying within
    its bound and connects; one that never comes up gets the bounded error with the reason."""
    import threading
    import time
    from swarm.errors import RemoteError
    from swarm.remote.ssh import SSHRunner
    hs = emulated_hosts(1)
    (h,) = hs.hosts
    h.kill_sshd()
    r = SSHRunner(h.ip, user="root", key_file=hs.key_path, known_hosts=tmp_path / "known_hosts")
    later = threading.Timer(1.5, h.start_sshd)
    later.start()
    try:
        t0 = time.monotonic()
        r.wait_ready(20)
        assert time.monotonic() - t0 >= 1.0
        assert r.run("echo up", timeout=10).stdout == "up\n"
    finally:
        later.cancel()
        later.join()
        r.close()
    h.kill_sshd()
    r = SSHRunner(h.ip, user="root", key_file=hs.key_path, known_hosts=tmp_path / "known_hosts")
    t0 = time.monotonic()
    with pytest.raises(RemoteError, match=r"did not answer within 2s \(.+\): check the security"):
        r.wait_ready(2)
    # 3x the 2 s budget, for a busy machine; an unbounded wait would go on for ever
    assert time.monotonic() - t0 < 6
