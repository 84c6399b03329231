"""Zones, capacity and just-launched instances as AWS has them (tests/emulation/quirks.py:
`no_capacity`, `unsupported`, `instance_not_found`). The CLI runs in a subprocess against the
emulated cloud; the default VPC is put in the lab (EmulatedEC2.make_subnets: one default
subnet per zone, each half of the lab subnet, so every instance gets a host)."""
from __future__ import annotations

import json

import pytest

from swarm import config
from swarm.models import Role
from swarm.providers.base import Stack
from swarm.providers.ec2.provider import Ec2Provider
from tests.helpers import assert_error_line, assert_one_error_line, swarm
from tests.reliability import (all_instances, ec2_toml, fast_bootstrap, instances, key_pairs,
                               security_groups)

STACK = "zoned"
A, B = "us-east-1a", "us-east-1b"
# every zone of us-east-1 that offers c5.large (moto's offerings, as AWS's: not us-east-1e)
C5_ZONES = ("us-east-1a", "us-east-1b", "us-east-1c", "us-east-1d", "us-east-1f")


@pytest.fixture
def zones(ec2_env, emulated_ec2) -> dict[str, str]:
    """zone -> subnet id of the lab's default VPC (us-east-1a and us-east-1b)."""
    return emulated_ec2.make_subnets(("a", "b"))


def stack(workdir, cli_env, ec2_env, subnet_id: str | None = None) -> dict[str, str]:
    ec2_toml(workdir, subnet_id, name=STACK)
    fast_bootstrap(workdir)
    return {**cli_env, **ec2_env.env}


def assert_nothing_left(ec2) -> None:
    assert [i for i in all_instances(ec2) if i["State"]["Name"] != "terminated"] == []
    assert security_groups(ec2, STACK) == [] and key_pairs(ec2, STACK) == []


def test_capacity_refused_in_the_first_zone_the_stack_comes_up_in_the_second(
        workdir, cli_env, ec2_env, zones, emulated_ec2):
    """No c5.large capacity in us-east-1a: `up master` and `up workers` say so, try
    us-east-1b, say that is where the nodes are; status shows their zone; `down` leaves
    nothing."""
    env = stack(workdir, cli_env, ec2_env)
    emulated_ec2.quirks.no_capacity = {(A, "c5.large")}
    ec2 = emulated_ec2.client()
    for args, line in ((("up", "master"), "launched 1 master node(s) in us-east-1b"),
                       (("up", "workers", "-n", "3"), "launched 3 worker node(s) in us-east-1b")):
        res = swarm(*args, cwd=workdir, env=env, timeout=240)
        assert res.code == 0, res.err
        assert ("no c5.large capacity in us-east-1a (InsufficientInstanceCapacity); "
                "trying us-east-1b") in res.err, res.err
        assert line in res.err, res.err
    assert emulated_ec2.quirks.count("RunInstances") >= 2    # refused once per launch
    assert {i["Placement"]["AvailabilityZone"] for i in instances(ec2, STACK)} == {B}
    assert {i["SubnetId"] for i in instances(ec2, STACK)} == {zones[B]}
    res = swarm("status", "--json", cwd=workdir, env=env, timeout=60)
    assert res.code == 0, res.err
    nodes = json.loads(res.out)["nodes"]
    assert len(nodes) == 4 and {n["zone"] for n in nodes} == {B}, nodes
    res = swarm("down", cwd=workdir, env=env, timeout=240)
    assert res.code == 0, res.err
    assert_nothing_left(ec2)


def test_a_zone_that_does_not_offer_the_type_is_skipped_and_the_user_told(
        workdir, cli_env, ec2_env, zones, emulated_ec2):
    """us-east-1a does not offer c5.large (DescribeInstanceTypeOfferings leaves it out, as
    RunInstances there would answer Unsupported): with no subnet_id the zone is never tried,
    the user is told, and the master is in us-east-1b."""
    env = stack(workdir, cli_env, ec2_env)
    emulated_ec2.quirks.unsupported = {(A, "c5.large")}
    res = swarm("up", "master", cwd=workdir, env=env, timeout=240)
    assert res.code == 0, res.err
    assert "us-east-1a does not offer c5.large: not launching there" in res.err, res.err
    assert "launched 1 master node(s) in us-east-1b" in res.err, res.err
    assert ("RunInstances", "Unsupported") not in emulated_ec2.quirks.answered
    assert swarm("down", cwd=workdir, env=env, timeout=240).code == 0
    assert_nothing_left(emulated_ec2.client())


def test_a_subnet_in_a_zone_without_the_type_is_refused_naming_the_zones_that_have_it(
        workdir, cli_env, ec2_env, zones, emulated_ec2):
    """[ec2] subnet_id in us-east-1a, which does not offer c5.large: one line naming the
    zones that do (not "change the instance type"), exit 1, before anything is created."""
    env = stack(workdir, cli_env, ec2_env, subnet_id=zones[A])
    emulated_ec2.quirks.unsupported = {(A, "c5.large")}
    res = swarm("up", "master", cwd=workdir, env=env, timeout=120)
    assert_one_error_line(res, 1, f"[ec2] subnet_id {zones[A]} is in us-east-1a",
                          "does not offer c5.large", ", ".join(C5_ZONES[1:]),
                          "set a subnet_id in one of them, or leave subnet_id out")
    assert "master_type" not in res.err, res.err
    assert_nothing_left(emulated_ec2.client())


@pytest.mark.parametrize("with_subnet", [False, True], ids=["default-vpc", "subnet_id"])
def test_unsupported_answered_by_run_instances_itself(with_subnet, workdir, cli_env, ec2_env,
                                                      zones, emulated_ec2):
    """The offerings list us-east-1a but RunInstances there answers Unsupported: with no
    subnet_id the next zone takes the launch; with subnet_id in us-east-1a, one line naming
    the zones that offer the type, exit 1, and `down` finds all that was made."""
    env = stack(workdir, cli_env, ec2_env, subnet_id=zones[A] if with_subnet else None)
    emulated_ec2.quirks.unsupported = {(A, "c5.large")}
    emulated_ec2.quirks.offerings_agree = False
    res = swarm("up", "master", cwd=workdir, env=env, timeout=240)
    assert ("RunInstances", "Unsupported") in emulated_ec2.quirks.answered
    if with_subnet:
        assert_error_line(res, 1, f"[ec2] subnet_id {zones[A]} is in us-east-1a",
                          "does not offer c5.large", "leave subnet_id out")
        assert "master_type" not in res.err_lines[-1], res.err
        assert instances(emulated_ec2.client(), STACK) == []
    else:
        assert res.code == 0, res.err
        assert "c5.large refused in us-east-1a (Unsupported); trying us-east-1b" in res.err
        assert "launched 1 master node(s) in us-east-1b" in res.err, res.err
    res = swarm("down", cwd=workdir, env=env, timeout=240)
    assert res.code == 0, res.err
    assert_nothing_left(emulated_ec2.client())


def test_capacity_refused_in_every_zone_is_one_line_with_the_advice(
        workdir, cli_env, ec2_env, zones, emulated_ec2):
    """No c5.large capacity in any zone: one line saying which zones were tried, retry later
    or pick another type; exit 1; no instance; `down` removes the group and key pair."""
    env = stack(workdir, cli_env, ec2_env)
    emulated_ec2.quirks.no_capacity = {(A, "c5.large"), (B, "c5.large")}
    res = swarm("up", "master", cwd=workdir, env=env, timeout=240)
    assert_error_line(res, 1, "no zone of us-east-1 has c5.large capacity",
                      "us-east-1a: InsufficientInstanceCapacity",
                      "us-east-1b: InsufficientInstanceCapacity",
                      "retry later, or pick another [ec2] master_type/worker_type")
    assert "subnet_id" not in res.err_lines[-1], res.err
    ec2 = emulated_ec2.client()
    assert all_instances(ec2) == []
    res = swarm("down", cwd=workdir, env=env, timeout=240)
    assert res.code == 0, res.err
    assert_nothing_left(ec2)


def test_just_launched_instances_not_found_yet(workdir, cli_env, ec2_env, emulated_ec2):
    """The first DescribeInstances / TerminateInstances naming a new instance answers
    InvalidInstanceID.NotFound (on for every EC2 test): `up` and `down` retry it and exit 0,
    nothing said of a mistake."""
    env = stack(workdir, cli_env, ec2_env, subnet_id=ec2_env.subnet_id)
    res = swarm("up", "master", cwd=workdir, env=env, timeout=240)
    assert res.code == 0, res.err
    assert ("DescribeInstances", "InvalidInstanceID.NotFound") in emulated_ec2.quirks.answered
    assert emulated_ec2.quirks.count("DescribeInstances") > 0
    assert "error" not in res.err and "NotFound" not in res.err, res.err
    res = swarm("down", cwd=workdir, env=env, timeout=240)
    assert res.code == 0, res.err
    assert_nothing_left(emulated_ec2.client())


def test_the_waiters_and_terminate_take_a_just_launched_id(workdir, cli_env, ec2_env,
                                                           emulated_ec2, monkeypatch):
    """The calls that name an instance right after RunInstances: terminate and the
    instance_terminated waiter (botocore's stops at the first NotFound) wait it out."""
    for k, v in stack(workdir, cli_env, ec2_env, subnet_id=ec2_env.subnet_id).items():
        if k.startswith("AWS_"):
            monkeypatch.setenv(k, v)
    cfg = config.load(workdir / "swarm.toml")
    provider, stk = Ec2Provider(cfg), Stack.from_config(cfg)
    provider.poll_delay = 0.2
    (node,) = provider.create_nodes(stk, Role.MASTER, 1)
    quirks = emulated_ec2.quirks
    provider.terminate_nodes(stk, [node])                   # describe + terminate + wait
    assert ("DescribeInstances", "InvalidInstanceID.NotFound") in quirks.answered
    quirks.fresh_instances.add(node.id)                     # as if EC2 lost sight of it again
    assert provider._wait("instance_terminated", [node.id], 30) is None
    assert ("DescribeInstances", "InvalidInstanceID.NotFound") in quirks.answered[-2:]
    provider.cleanup(stk)
    assert_nothing_left(emulated_ec2.client())


def test_the_quirk_answers_once_per_instance(ec2_env, emulated_ec2):
    """The emulated cloud's side: by id, NotFound once; in an instance-id filter, an answer
    without it once (AWS's filters never answer NotFound); then the instance as it is."""
    ec2 = emulated_ec2.client()
    launched = ec2.run_instances(ImageId="ami-785db401", MinCount=1, MaxCount=1,
                                 SubnetId=ec2_env.subnet_id)["Instances"]
    iid = launched[0]["InstanceId"]
    with pytest.raises(Exception, match="InvalidInstanceID.NotFound"):
        ec2.describe_instances(InstanceIds=[iid])
    assert ec2.describe_instances(InstanceIds=[iid])["Reservations"]
    second = ec2.run_instances(ImageId="ami-785db401", MinCount=1, MaxCount=1,
                               SubnetId=ec2_env.subnet_id)["Instances"][0]["InstanceId"]
    by_filter = {"Filters": [{"Name": "instance-id", "Values": [second]}]}
    assert ec2.describe_instances(**by_filter)["Reservations"] == []
    assert ec2.describe_instances(**by_filter)["Reservations"]
    ec2.terminate_instances(InstanceIds=[iid, second])
