"""Security groups bite in the lab (tests/emulation/firewall.py): each emulated instance only
accepts what its groups' ingress rules allow, so a missing rule breaks the flow as on AWS.

* the stack's group as swarm makes it: SSH from ssh_cidr (the controller sits on the bridge,
  10.77.1.1), Locust's ports from the group's own members only: a machine outside the group is
  dropped (a timeout, not a refusal), and a worker launched later is let in;
* the group's self rule revoked after `up`: the workers cannot reach the master, and `run` says
  which workers did not connect and what to check, leaving no Locust running;
* SSH closed to the controller (ssh_cidr elsewhere): `up master` fails with one clear line, and
  `down` still finds and removes the master.
"""
from __future__ import annotations

import json
import socket
import time

import pytest

from tests.helpers import assert_error_line, swarm
from tests.reliability import (ec2_stack, ec2_toml, fast_bootstrap, instances, locust_pids, poll,
                               security_groups)

STACK = "sg"


def dropped(ip: str, port: int, timeout: float = 2.0) -> bool:
    """A connection from here (the bridge) to ip:port is silently dropped (not refused)."""
    try:
        with socket.create_connection((ip, port), timeout=timeout):
            return False
    except TimeoutError:
        return True
    except OSError:
        return False


def hosts_by_name(emulated_ec2, workdir, env) -> dict:
    res = swarm("status", "--json", cwd=workdir, env=env)
    assert res.code == 0, res.err
    return {n["name"]: emulated_ec2.host_for(n["id"]) for n in json.loads(res.out)["nodes"]}


@pytest.fixture
def env(workdir, cli_env, ec2_env):
    return ec2_stack(workdir, cli_env, ec2_env, STACK)


def test_locust_ports_open_to_the_group_only_and_the_self_rule_matters(
        workdir, env, emulated_ec2, bridge_target):
    assert swarm("up", "master", cwd=workdir, env=env, timeout=120).code == 0
    assert swarm("up", "workers", "-n", "2", cwd=workdir, env=env, timeout=120).code == 0
    hosts = hosts_by_name(emulated_ec2, workdir, env)
    master = hosts["master"]
    # the master's table names both workers, the second launched after it
    table = master.exec("iptables-save -t filter", check=True).stdout
    for name in ("worker-1", "worker-2"):
        assert f"-A INPUT -s {hosts[name].ip}/32 -p tcp -m tcp --dport 5557:5558 -j ACCEPT" in table
    # a Locust port listening on the master, tried from outside the group: dropped
    pid = master.exec(f"nohup python3 -c 'import socket,time; s=socket.socket(); "
                      f"s.bind((\"{master.ip}\", 5557)); s.listen(); time.sleep(30)' "
                      ">/dev/null 2>&1 & echo $!", check=True).stdout.strip()
    poll(lambda: master._listens(5557), timeout=20, what="the stand-in listener")
    assert dropped(master.ip, 5557)
    worker = hosts["worker-1"]
    reach = worker.exec(f"python3 -c 'import socket; socket.create_connection("
                        f"(\"{master.ip}\", 5557), timeout=5)'")
    assert reach.returncode == 0, reach.stderr            # a member of the group gets in
    master.exec(f"kill {pid}")

    # the self rule revoked: the workers' Locust cannot reach the master any more
    ec2 = emulated_ec2.client()
    (group,) = security_groups(ec2, STACK)
    gid = group["GroupId"]
    rules = ec2.describe_security_group_rules(
        Filters=[{"Name": "group-id", "Values": [gid]}])["SecurityGroupRules"]
    (self_rule,) = [r["SecurityGroupRuleId"] for r in rules
                    if r.get("ReferencedGroupInfo", {}).get("GroupId") == gid]
    ec2.revoke_security_group_ingress(GroupId=gid, SecurityGroupRuleIds=[self_rule])
    assert "5557" not in master.exec("iptables-save -t filter", check=True).stdout
    t0 = time.monotonic()
    res = swarm("run", "-H", bridge_target.url, "-f", "signups.py", "--headless", "-u", "2",
                "-r", "2", "-t", "3s", cwd=workdir, env=env, timeout=240)
    took = time.monotonic() - t0
    assert_error_line(res, 1, "0 of 2 worker process(es) connected", "worker-1, worker-2",
                      "port 5557")
    assert bridge_target.total() == 0
    assert all(locust_pids(h) == [] for h in hosts.values()), "a Locust was left running"
    assert took < 150, took
    assert swarm("down", cwd=workdir, env=env, timeout=120).code == 0


def test_ssh_closed_to_the_controller_fails_up_with_one_clear_line(
        workdir, cli_env, ec2_env, emulated_ec2):
    """ssh_cidr leaves the controller (10.77.1.1) out: SSH times out, `up` says what to check."""
    ec2_toml(workdir, ec2_env.subnet_id, name=STACK).write_text(
        (workdir / "swarm.toml").read_text().replace('"10.77.0.0/16"', '"10.77.2.0/24"'))
    fast_bootstrap(workdir)
    env = {**cli_env, **ec2_env.env}
    res = swarm("up", "master", cwd=workdir, env=env, timeout=120)
    assert_error_line(res, 1, "master", "SSH did not answer", "security group / ssh_cidr")
    ec2 = emulated_ec2.client()
    res = swarm("down", cwd=workdir, env=env, timeout=120)
    assert res.code == 0, res.err
    assert instances(ec2, STACK) == [] and emulated_ec2.hosts == {}
