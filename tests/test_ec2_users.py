"""Users and defaults as on EC2 (issue 15, item 3): the CLI in a subprocess against the emulated
cloud, whose hosts log in as the image's user (`ubuntu`, `ec2-user`) with passwordless sudo,
made in each host's own layer as cloud-init makes it (root refuses the key there), and swarm's
defaults: the AMI's user and `processes = -1`, one Locust worker process per core. And a user
without sudo: what needs root is skipped with a log line, or fails in one line."""
from __future__ import annotations

import os
import signal

import pytest

from tests.emulation.host import SYSTEM_PATH
from tests.helpers import assert_error_line, swarm
from tests.reliability import ec2_toml, instances, locust_pids, poll

STACK = "users"
LIMITS = "/etc/security/limits.d/90-swarm.conf"
# A fresh instance has no swarm limits file; this machine may hold one, written by hosts that
# shared its /etc before they had roots of their own.
FRESH = [LIMITS]


def hosts_of(emulated_ec2, role: str | None = None):
    return [emulated_ec2.host_for(i["InstanceId"])
            for i in instances(emulated_ec2.client(), STACK, role)]


def ok(workdir, env, *args: str) -> str:
    res = swarm(*args, cwd=workdir, env=env, timeout=240)
    assert res.code == 0, (args, res.out, res.err)
    return res.err


@pytest.mark.parametrize("ami, user", [("ubuntu-24.04", "ubuntu"), ("al2023", "ec2-user")])
def test_the_headline_flow_as_the_images_user_with_one_process_per_core(
        workdir, cli_env, ec2_env, emulated_ec2, bridge_target, ami, user):
    """No ssh_user, no processes: swarm logs in as the AMI's user, bootstrap raises the
    open-file limit and schedules the power-off through sudo, and every worker node runs one
    Locust process per core: all of them connect to the master, and `killall` leaves none
    (forked children included) on any host, even with the master hung."""
    ec2_toml(workdir, ec2_env.subnet_id, name=STACK, ami=ami, user=None, processes=None,
             ec2_extra='ttl = "1h"\n')
    env = {**cli_env, **ec2_env.env}
    emulated_ec2.host_options = lambda ip, index: {"user": user, "hide": FRESH}
    ok(workdir, env, "up", "master")
    ok(workdir, env, "up", "workers", "-n", "2")
    hosts = hosts_of(emulated_ec2)
    workers = hosts_of(emulated_ec2, "worker")
    assert len(hosts) == 3 and len(workers) == 2
    for host in hosts:
        log = (host.login_home / "swarm" / "bootstrap.log").read_text()
        assert f"user={user}" in log and f"wrote {LIMITS}" in log, log
        assert "nofile 65535" in (host.layer / LIMITS.lstrip("/")).read_text()
        assert [c.minutes for c in host.power_calls() if c.name == "shutdown"], \
            host.power_calls()                     # through sudo: the stub ran as root
        assert not (host.home / "swarm").exists()  # nothing of swarm's in root's home

    cores = [int(w.exec("nproc", check=True).stdout) for w in workers]
    expected = sum(cores)
    err = ok(workdir, env, "run", "-H", bridge_target.url, "-f", "viral_load.py", "--headless",
             "-u", "8", "-r", "8", "-t", "3s")
    assert f"{expected} of {expected} worker process(es) connected" in err, err

    # A UI run keeps Locust up until killall: the parent and its forked children on each
    # worker, every one of them connected.
    err = ok(workdir, env, "run", "-H", bridge_target.url, "-f", "viral_load.py", "-u", "4")
    assert f"{expected} of {expected} worker process(es) connected" in err, err
    running = {w.name: locust_pids(w) for w in workers}
    for w, n in zip(workers, cores, strict=True):
        assert len(running[w.name]) == n + 1, (w.name, running[w.name])
    # A hung master cannot tell the workers to quit: only signalling each worker's process
    # group reaches the forked children (a signal to the parent alone would orphan them).
    (master,) = hosts_of(emulated_ec2, "master")
    (master_locust,) = locust_pids(master)
    os.kill(master_locust, signal.SIGSTOP)
    ok(workdir, env, "killall")
    for w in [*workers, master]:
        poll(lambda w=w: not locust_pids(w), timeout=20, what=f"Locust gone from {w.name}")
    for w in workers:
        alive = set(running[w.name]) & set(w.pids(include_init=True))
        assert not alive, (w.name, alive)
    ok(workdir, env, "down")
    assert instances(emulated_ec2.client(), STACK) == []


def test_a_user_without_sudo_skips_the_limits_and_says_the_power_off_is_not_scheduled(
        workdir, cli_env, ec2_env, emulated_ec2):
    """Locust is there already: bootstrap succeeds without root, says it skipped the open-file
    limit, and `up` warns that nothing will power the node off at the TTL."""
    ec2_toml(workdir, ec2_env.subnet_id, name=STACK, ami="ubuntu-24.04", user=None,
             ec2_extra='ttl = "1h"\n')
    env = {**cli_env, **ec2_env.env}
    emulated_ec2.host_options = lambda ip, index: {"user": "ubuntu", "sudo": False,
                                                   "hide": FRESH}
    err = ok(workdir, env, "up", "master")
    (host,) = hosts_of(emulated_ec2)
    log = (host.login_home / "swarm" / "bootstrap.log").read_text()
    assert (f"cannot write {LIMITS} (not root, no passwordless sudo); skipped raising the "
            "open-file limit") in log, log
    assert host.exec(f"test -e {LIMITS}").returncode == 1
    assert "no shutdown scheduled" in err and "`swarm down` when done" in err, err
    assert host.power_calls() == []
    ok(workdir, env, "down")


def test_a_user_without_sudo_where_python_must_be_installed_fails_in_one_line(
        workdir, cli_env, ec2_env, emulated_ec2):
    """No Locust and no Python >= 3.11 on the host, and no sudo to install them: `up` fails,
    naming the reason, and `down` removes the node."""
    ec2_toml(workdir, ec2_env.subnet_id, name=STACK, ami="ubuntu-24.04", user=None)
    env = {**cli_env, **ec2_env.env}
    emulated_ec2.host_options = lambda ip, index: {
        "user": "ubuntu", "sudo": False, "env": {"PATH": SYSTEM_PATH},
        "hide": ["/usr/bin/python3", "/usr/bin/python3.11", *FRESH]}
    res = swarm("up", "master", cwd=workdir, env=env, timeout=240)
    assert_error_line(res, 1, "need Python >= 3.11 with venv, and cannot install it: not root "
                              "and passwordless sudo is unavailable")
    ok(workdir, env, "down")
    assert instances(emulated_ec2.client(), STACK) == []
