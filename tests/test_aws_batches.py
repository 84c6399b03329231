"""RunInstances for many nodes (issue 18, Deliver 5): calls of at most 50 instances, each
with its own ClientToken and MinCount=1, so a zone with room for fewer launches what it can
and the rest goes to the next zone (quirks.capacity, as RunInstances' MaxCount is
documented); a launch that fails as a whole leaves nothing behind; a throttled call
(RequestLimitExceeded) is retried. The CLI in a subprocess against the emulated cloud, and
a launch of 120 through the provider in a subnet outside the lab (no hosts: moto only)."""
from __future__ import annotations

import json
from collections import Counter

from swarm import config
from swarm.models import Role
from swarm.providers.base import Stack
from swarm.providers.ec2 import launch
from swarm.providers.ec2.provider import Ec2Provider
from tests.helpers import assert_error_line, swarm
from tests.reliability import all_instances, ec2_toml, fast_bootstrap, instances
from tests.test_aws_zones import A, B, STACK, assert_nothing_left, stack, zones  # noqa: F401

C5 = "c5.large"


def test_a_zone_with_room_for_3_of_7_the_other_4_in_the_next(
        workdir, cli_env, ec2_env, zones, emulated_ec2):  # noqa: F811
    env = stack(workdir, cli_env, ec2_env)
    ec2 = emulated_ec2.client()
    res = swarm("up", "master", cwd=workdir, env=env, timeout=240)
    assert res.code == 0, res.err
    assert "launched 1 master node(s) in us-east-1a" in res.err, res.err

    emulated_ec2.quirks.capacity = {(A, C5): 3}
    res = swarm("up", "workers", "-n", "7", cwd=workdir, env=env, timeout=300)
    assert res.code == 0, res.err
    assert "us-east-1a had c5.large capacity for 3 more: launching the other 4 in us-east-1b" \
        in res.err, res.err
    assert "launched 7 worker node(s): 3 in us-east-1a, 4 in us-east-1b" in res.err, res.err
    workers = instances(ec2, STACK, "worker")
    assert Counter(i["Placement"]["AvailabilityZone"] for i in workers) == {A: 3, B: 4}
    res = swarm("status", "--json", cwd=workdir, env=env, timeout=60)
    assert res.code == 0, res.err
    nodes = json.loads(res.out)["nodes"]
    assert Counter(n["zone"] for n in nodes if n["role"] == "worker") == {A: 3, B: 4}

    # Room for one more in each zone, three asked: what the launch got is terminated again.
    emulated_ec2.quirks.capacity = {(A, C5): 1, (B, C5): 1}
    res = swarm("up", "workers", "-n", "10", cwd=workdir, env=env, timeout=300)
    assert_error_line(res, 1, "no zone of us-east-1 has c5.large capacity for 3 node(s) "
                      "right now (tried us-east-1a: 1, us-east-1b: 1)",
                      "retry later, or pick another [ec2] master_type/worker_type")
    assert "terminated the 2 instance(s) of the failed launch" in res.err, res.err
    assert len(instances(ec2, STACK, "worker")) == 7
    assert len([i for i in all_instances(ec2) if i["State"]["Name"] != "terminated"]) == 8

    res = swarm("down", cwd=workdir, env=env, timeout=300)
    assert res.code == 0, res.err
    assert_nothing_left(ec2)


def test_120_nodes_are_three_calls_of_at_most_50_and_a_throttle_is_retried(
        workdir, cli_env, ec2_env, emulated_ec2, monkeypatch):
    ec2 = emulated_ec2.client()
    vpc = ec2.create_vpc(CidrBlock="10.201.0.0/16")["Vpc"]["VpcId"]      # outside the lab:
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.201.0.0/20",     # moto only, no hosts
                               AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
    ec2_toml(workdir, subnet, name=STACK)
    fast_bootstrap(workdir)
    for k, v in ec2_env.env.items():
        monkeypatch.setenv(k, v)
    cfg = config.load(workdir / "swarm.toml")
    provider, stk = Ec2Provider(cfg), Stack.from_config(cfg)
    second = lambda p: p.get("MaxCount") == "50" and throttle.hits < 2 and seen()  # noqa: E731
    seen = lambda: len(served.params_seen) == 1                                  # noqa: E731
    throttle = emulated_ec2.inject("RunInstances", "RequestLimitExceeded", status=503,
                                   message="Request limit exceeded.", times=2, when=second)
    served = emulated_ec2.inject("RunInstances", None, times=None)     # records, then moto
    try:
        nodes = provider.create_nodes(stk, Role.WORKER, 120)
    finally:
        ids = [i["InstanceId"] for i in instances(ec2, STACK)]
        if ids:
            launch.terminate(ec2, ids)
    assert len(nodes) == 120 and len({n.id for n in nodes}) == 120
    assert throttle.hits == 2                                 # the second call, twice
    assert [p["MaxCount"] for p in served.params_seen] == ["50", "50", "20"]
    assert {p["MinCount"] for p in served.params_seen} == {"1"}
    assert len({p["ClientToken"] for p in served.params_seen}) == 3
    launched = [i for i in all_instances(ec2) if i["SubnetId"] == subnet]
    assert len(launched) == 120                               # nothing launched twice
    assert all({"Key": "swarm:stack", "Value": STACK} in i["Tags"] for i in launched)


def test_spot_with_room_for_3_of_5_keeps_them_and_launches_the_other_2_on_demand(
        workdir, cli_env, ec2_env, zones, emulated_ec2):  # noqa: F811
    """spot = true, spot capacity for fewer than asked in every zone: the spot instances stay
    and only the rest is launched on-demand (a fallback of the whole launch would terminate
    them and pay on-demand for all). If the on-demand rest fails too, the spot ones go."""
    ec2_toml(workdir, None, name=STACK, ec2_extra="spot = true\n")
    fast_bootstrap(workdir)
    env = {**cli_env, **ec2_env.env}
    ec2 = emulated_ec2.client()
    res = swarm("up", "master", cwd=workdir, env=env, timeout=240)
    assert res.code == 0, res.err

    emulated_ec2.quirks.spot_capacity = {(A, C5): 2, (B, C5): 1}
    res = swarm("up", "workers", "-n", "5", cwd=workdir, env=env, timeout=300)
    assert res.code == 0, res.err
    for line in ("us-east-1a had spot c5.large capacity for 2 more: launching the other 3 in "
                 "us-east-1b",
                 "launched 3 worker node(s): 2 in us-east-1a, 1 in us-east-1b",
                 "spot had c5.large capacity for 3 of 5 worker node(s): launching the other 2 "
                 "on-demand",
                 "launched 2 worker node(s) in us-east-1a on-demand"):
        assert line in res.err, res.err
    assert "launching them on-demand" not in res.err, res.err   # not the whole launch again
    workers = instances(ec2, STACK, "worker")
    assert Counter(i.get("InstanceLifecycle", "on-demand") for i in workers) == {
        "spot": 3, "on-demand": 2}
    assert len([i for i in all_instances(ec2) if i["State"]["Name"] != "terminated"]) == 6

    # spot room for 1, and no on-demand room anywhere: the spot one is terminated again
    emulated_ec2.quirks.spot_capacity = {(A, C5): 1, (B, C5): 0}
    emulated_ec2.quirks.capacity = {(A, C5): 0, (B, C5): 0}
    res = swarm("up", "workers", "-n", "7", cwd=workdir, env=env, timeout=300)
    assert_error_line(res, 1, "no zone of us-east-1 has c5.large capacity for 1 node(s) "
                      "right now")
    assert "terminated the 1 instance(s) of the failed launch" in res.err, res.err
    assert "launching them on-demand" not in res.err, res.err   # on-demand was tried already
    assert len(instances(ec2, STACK, "worker")) == 5
    emulated_ec2.quirks.spot_capacity, emulated_ec2.quirks.capacity = {}, {}
    res = swarm("down", cwd=workdir, env=env, timeout=300)
    assert res.code == 0, res.err
    assert_nothing_left(ec2)
