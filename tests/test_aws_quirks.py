"""AWS as it behaves (tests/emulation/quirks.py), one test per quirk: what the user sees, and
that nothing is left that `swarm down` can't find. The CLI runs in a subprocess against the
emulated cloud, whose quirks are on for every EC2 test of the suite."""
from __future__ import annotations

import re

import pytest

from swarm import config
from swarm.errors import ProviderError
from swarm.providers.base import Stack
from swarm.providers.ec2.provider import Ec2Provider
from tests.helpers import swarm
from tests.reliability import all_instances, ec2_stack, instances

STACK = "quirky"


@pytest.fixture
def stack_env(workdir, cli_env, ec2_env):
    return ec2_stack(workdir, cli_env, ec2_env, STACK)


def groups(ec2) -> list[str]:
    return [g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]
            if g["GroupName"] == f"swarm-{STACK}"]


def key_pairs(ec2) -> list[str]:
    return [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]
            if k["KeyName"] == f"swarm-{STACK}"]


def test_just_created_group_and_key_pair_not_found_yet(workdir, stack_env, emulated_ec2):
    """The group's first use (authorize) and the key pair's (RunInstances) answer NotFound,
    as AWS may just after creating them: `up` retries them, launches once, and says nothing
    of a config mistake."""
    res = swarm("up", "master", cwd=workdir, env=stack_env, timeout=180)
    assert res.code == 0, res.err
    answered = emulated_ec2.quirks.answered
    assert ("AuthorizeSecurityGroupIngress", "InvalidGroup.NotFound") in answered, answered
    assert ("RunInstances", "InvalidKeyPair.NotFound") in answered, answered
    assert len(instances(emulated_ec2.client(), STACK)) == 1        # one launch, not two
    assert "error" not in res.err and "key_name" not in res.err, res.err
    res = swarm("down", cwd=workdir, env=stack_env, timeout=180)
    assert res.code == 0, res.err


def test_down_waits_while_the_terminated_instances_hold_the_group(workdir, stack_env,
                                                                   emulated_ec2):
    """DependencyViolation on DeleteSecurityGroup for a few seconds after the instances are
    terminated: `down` deletes the key pair first, says it is waiting for the group, retries
    and exits 0 with nothing left."""
    emulated_ec2.quirks.group_held_s = 4.0
    assert swarm("up", "master", cwd=workdir, env=stack_env, timeout=180).code == 0
    res = swarm("down", cwd=workdir, env=stack_env, timeout=180)
    assert res.code == 0, res.err
    assert ("DeleteSecurityGroup", "DependencyViolation") in emulated_ec2.quirks.answered
    assert "is still held by the terminated instances' network interfaces" in res.err, res.err
    ec2 = emulated_ec2.client()
    assert groups(ec2) == [] and key_pairs(ec2) == []
    assert [i for i in all_instances(ec2) if i["State"]["Name"] != "terminated"] == []


def test_a_group_still_held_after_the_retries_is_named_and_down_again_removes_it(
        workdir, stack_env, emulated_ec2, monkeypatch, tmp_path):
    """AWS holds the group longer than swarm retries: one line naming the group and that
    `swarm down` again removes it (exit 1); the key pair is gone already; a later `down`
    removes the group."""
    for k, v in stack_env.items():
        if k.startswith("AWS_"):
            monkeypatch.setenv(k, v)
    cfg = config.load(workdir / "swarm.toml")
    provider, stack = Ec2Provider(cfg), Stack.from_config(cfg)
    provider.prepare(stack)                                   # the group and key pair
    ec2 = emulated_ec2.client()
    (gid,) = groups(ec2)
    emulated_ec2.quirks.group_held_s = 600.0
    emulated_ec2.quirks.terminated()                          # as if its instances just went
    provider.group_delete_timeout = 2.0
    seen: list[str] = []
    provider.progress = seen.append
    with pytest.raises(ProviderError) as err:
        provider.cleanup(stack)
    msg = str(err.value)
    assert gid in msg and "`swarm down` again" in msg and "\n" not in msg, msg
    assert err.value.code == "DependencyViolation"
    assert seen and gid in seen[0]
    assert key_pairs(ec2) == [] and groups(ec2) == [gid]

    emulated_ec2.quirks.group_held_s = 0.0                    # AWS lets go of it
    res = swarm("down", cwd=workdir, env=stack_env, timeout=60)
    assert res.code == 0, res.err
    assert groups(ec2) == []


def test_a_freed_ip_comes_back_with_a_new_host_key(workdir, stack_env, emulated_ec2):
    """The next worker gets the terminated one's private IP and a new host key, as on EC2:
    swarm forgot the old key when it terminated the node, so the new one is accepted (a
    changed key on a live node is still refused: test_exposure)."""
    assert swarm("up", "master", cwd=workdir, env=stack_env, timeout=180).code == 0
    assert swarm("up", "workers", "-n", "1", cwd=workdir, env=stack_env, timeout=180).code == 0
    ec2 = emulated_ec2.client()
    (old,) = instances(ec2, STACK, "worker")
    old_key = emulated_ec2.host_for(old["InstanceId"]).known_hosts_line.split()[-1]
    res = swarm("down", "workers", cwd=workdir, env=stack_env, timeout=180)
    assert res.code == 0, res.err
    res = swarm("up", "workers", "-n", "1", cwd=workdir, env=stack_env, timeout=180)
    assert res.code == 0, res.err
    (new,) = instances(ec2, STACK, "worker")
    assert new["PrivateIpAddress"] == old["PrivateIpAddress"] and new["InstanceId"] != old["InstanceId"]
    assert emulated_ec2.host_for(new["InstanceId"]).known_hosts_line.split()[-1] != old_key
    assert " ok" in res.out, res.out
    assert swarm("down", cwd=workdir, env=stack_env, timeout=180).code == 0


def test_the_headline_flow_twice_on_the_quirky_cloud(workdir, stack_env, emulated_ec2,
                                                     bridge_target):
    """up master, up workers -n 3, a headless run, down workers, up workers -n 3 again (the
    freed IPs come back with new host keys), a headless run, down: every command exits 0 and
    no instance, security group or key pair is left. An SCP requiring IMDSv2 is on too: every
    launch asks for it."""
    emulated_ec2.quirks.require_imdsv2 = True
    ec2 = emulated_ec2.client()
    run = ("run", "-H", bridge_target.url, "-f", "viral_load.py", "--headless", "-u", "6",
           "-r", "6", "-t", "3s")

    def ok(*args: str) -> str:
        res = swarm(*args, cwd=workdir, env=stack_env, timeout=240)
        assert res.code == 0, (args, res.err)
        return res.err

    ok("up", "master")
    ok("up", "workers", "-n", "3")
    first = {i["PrivateIpAddress"] for i in instances(ec2, STACK, "worker")}
    assert "3 of 3 worker process(es) connected" in ok(*run)
    ok("down", "workers")
    ok("up", "workers", "-n", "3")
    again = {i["PrivateIpAddress"] for i in instances(ec2, STACK, "worker")}
    assert again == first            # every address reused, each by a new host
    assert "3 of 3 worker process(es) connected" in ok(*run)
    ok("down")
    assert [i for i in all_instances(ec2) if i["State"]["Name"] != "terminated"] == []
    assert groups(ec2) == [] and key_pairs(ec2) == []
    names = [q for q in emulated_ec2.quirks.answered]
    assert ("DeleteSecurityGroup", "DependencyViolation") in names, names


def test_instances_run_before_their_sshd_answers(workdir, stack_env, emulated_ec2, tmp_path):
    """The instance is `running` at once but its sshd refuses connections for seconds, as a
    booting EC2 instance's does: `up` retries within ssh_timeout, says it is waiting for SSH
    and when it answered, and pins the host key on that first contact."""
    emulated_ec2.quirks.sshd_late_s = 4.0
    res = swarm("up", "master", cwd=workdir, env=stack_env, timeout=180)
    assert res.code == 0, res.err
    ec2 = emulated_ec2.client()
    (inst,) = instances(ec2, STACK, "master")
    host = emulated_ec2.host_for(inst["InstanceId"])
    assert host.sshd_delay == 4.0
    ip = inst["PrivateIpAddress"]
    assert f"master ({ip}:22): SSH not answering yet (connection refused); waiting up to 10s" \
        in res.err, res.err
    answered = re.search(r"master: SSH answered after (\d+)s", res.err)
    assert answered and int(answered.group(1)) >= 1, res.err
    assert "error" not in res.err, res.err
    (known,) = (tmp_path / "state").glob(f"ec2/*/{STACK}/known_hosts")
    assert known.read_text().splitlines() == [host.known_hosts_line], known.read_text()
    assert swarm("down", cwd=workdir, env=stack_env, timeout=180).code == 0
    assert instances(ec2, STACK) == [] and groups(ec2) == [] and key_pairs(ec2) == []
