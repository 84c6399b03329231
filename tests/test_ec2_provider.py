"""The EC2 provider against in-process moto (`moto.mock_aws`): no network, no real AWS.

Every test runs with fake credentials, a VPC 10.77.0.0/16 + subnet 10.77.1.0/24, an explicit
[ec2] ssh_cidr (so the public-IP lookup is never made) and SWARM_STATE_DIR in tmp_path.
"""
from __future__ import annotations

import base64
import datetime as dt
import json
import os
import socket
import stat
import sys
import time
import types

import pytest

from tests.helpers import fake_aws_env, share_botocore_loader
from tests.emulation.ec2 import launch_max_count

boto3 = pytest.importorskip("boto3")
moto = pytest.importorskip("moto")
from botocore.exceptions import (ClientError, EndpointConnectionError,  # noqa: E402
                                 NoCredentialsError, NoRegionError)

from swarm import config as swarm_config  # noqa: E402
from swarm.errors import ConfigError, ProviderError, UsageError  # noqa: E402
from swarm.providers.base import Stack  # noqa: E402
from swarm.providers.ec2 import setup as ec2_setup  # noqa: E402
from swarm.providers.ec2.errors import aws_errors, translate  # noqa: E402
from swarm.providers.ec2.provider import Ec2Provider  # noqa: E402
from swarm.remote.base import DIRECT  # noqa: E402

REGION = "eu-west-1"
ACCOUNT = "123456789012"
SSH_CIDR = "203.0.113.7/32"
LIVE = ["pending", "running", "stopping", "stopped", "shutting-down"]
REAL_LOOKUP = ec2_setup.lookup_public_ip      # saved before any test replaces it


# ---------------------------------------------------------------- guards and fixtures

@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Any connection to a non-loopback address fails the test."""
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def check(address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and host not in ("127.0.0.1", "::1", "localhost") \
                and not host.startswith("/"):
            raise AssertionError(f"test tried to connect to {address!r}")

    monkeypatch.setattr(socket.socket, "connect", lambda s, a: (check(a), real_connect(s, a))[1])
    monkeypatch.setattr(socket.socket, "connect_ex", lambda s, a: (check(a), real_connect_ex(s, a))[1])


@pytest.fixture(autouse=True)
def checkip_calls(monkeypatch):
    """The public-IP lookup: recorded, and a failure unless a test replaces it."""
    calls = []

    def forbidden(timeout=5.0):
        calls.append(timeout)
        raise AssertionError("lookup_public_ip called although ssh_cidr is set")

    monkeypatch.setattr(ec2_setup, "lookup_public_ip", forbidden)
    return calls


@pytest.fixture(autouse=True)
def shared_botocore_loader(monkeypatch):
    share_botocore_loader(monkeypatch)


@pytest.fixture
def aws(monkeypatch, tmp_path):
    fake_aws_env(monkeypatch, tmp_path, REGION)
    launch_max_count(monkeypatch)
    with moto.mock_aws():
        yield boto3.client("ec2", region_name=REGION)


def _seed_ssm(name: str, value: str) -> None:
    from moto.ssm.models import Parameter, ssm_backends
    backend = ssm_backends[ACCOUNT][REGION]
    backend._parameters[name].append(Parameter(
        account_id=ACCOUNT, name=name, value=value, parameter_type="String", description=None,
        allowed_pattern=None, keyid=None, last_modified_date=dt.datetime.now(), version=1,
        data_type="aws:ec2:image"))


@pytest.fixture
def images(aws):
    """Seed Canonical's public SSM parameters (absent from moto) with distinct moto images."""
    from moto.ec2.models import ec2_backends      # (describe_images of all 1,300 takes 1 s)
    amis = ec2_backends[ACCOUNT][REGION].amis
    x86 = sorted(k for k, v in amis.items() if v.architecture == "x86_64")
    arm = sorted(k for k, v in amis.items() if v.architecture == "arm64")
    seeded = {"ubuntu-22.04": x86[0], "ubuntu-24.04": x86[1]}
    for alias, image_id in seeded.items():
        _seed_ssm(ec2_setup.AMI_ALIASES[alias][1], image_id)
    if arm:
        seeded["ubuntu-24.04/arm64"] = arm[0]
        _seed_ssm(ec2_setup.AMI_ALIASES["ubuntu-24.04"][2], arm[0])
    return seeded


@pytest.fixture
def subnet(aws, images):
    vpc = aws.create_vpc(CidrBlock="10.77.0.0/16")["Vpc"]["VpcId"]
    return aws.create_subnet(VpcId=vpc, CidrBlock="10.77.1.0/24")["Subnet"]["SubnetId"]


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def make_config(stack="alpha", **ec2):
    ec2 = {"region": REGION, "ssh_cidr": SSH_CIDR, "connect": "private", "ttl": "90m",
           "tags": {"team": "perf"}, **ec2}
    lines = ["[stack]", f'name = "{stack}"', 'provider = "ec2"', "[ec2]"]
    lines += [f"{k} = {_toml(v)}" for k, v in ec2.items() if v is not None]
    return swarm_config.parse("\n".join(lines) + "\n")


def make(subnet_id, stack="alpha", **ec2):
    cfg = make_config(stack, subnet_id=subnet_id, **ec2)
    provider = Ec2Provider(cfg)
    provider.poll_delay = 0.01
    return provider, Stack.from_config(cfg)


def instances(ec2, stack=None, states=LIVE):
    filters = [{"Name": "instance-state-name", "Values": states}]
    if stack:
        filters.append({"Name": "tag:swarm:stack", "Values": [stack]})
    return [i for r in ec2.describe_instances(Filters=filters)["Reservations"] for i in r["Instances"]]


def tags_of(resource):
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


def groups_of(ec2, stack):
    return ec2.describe_security_groups(
        Filters=[{"Name": "tag:swarm:stack", "Values": [stack]}])["SecurityGroups"]


def key_pairs_of(ec2, stack):
    return ec2.describe_key_pairs(Filters=[{"Name": "tag:swarm:stack", "Values": [stack]}])["KeyPairs"]


def record_calls(provider, operation):
    calls = []
    provider.ec2.meta.events.register(f"before-parameter-build.ec2.{operation}",
                                      lambda params, **kw: calls.append(dict(params)))
    return calls


def up(provider, stack, workers=5):
    provider.prepare(stack)
    master = provider.create_nodes(stack, "master", 1)
    return master, provider.create_nodes(stack, "worker", workers) if workers else []


# ---------------------------------------------------------------- launching

def test_master_and_workers_are_tagged_at_creation(aws, subnet):
    provider, stack = make(subnet)
    runs, create_tags = record_calls(provider, "RunInstances"), record_calls(provider, "CreateTags")
    before = time.time()
    master, workers = up(provider, stack, 5)

    assert len(master) == 1 and len(workers) == 5
    # MinCount 1: EC2 launches what the zone can, the rest goes to the next zone
    assert [(c["MinCount"], c["MaxCount"]) for c in runs] == [(1, 1), (1, 5)]
    assert create_tags == []          # every tag came with the creating call
    for call in runs:
        assert {s["ResourceType"] for s in call["TagSpecifications"]} == {"instance", "volume"}

    found = instances(aws, "alpha")
    assert len(found) == 6
    by_id = {i["InstanceId"]: i for i in found}
    for node in master + workers:
        tags = tags_of(by_id[node.id])
        assert tags["swarm:stack"] == "alpha" and tags["swarm:role"] == node.role
        assert tags["Name"] == f"swarm-alpha-{node.role}"
        assert tags["swarm:created-by"] == f"arn:aws:sts::{ACCOUNT}:user/moto"
        assert tags["team"] == "perf"
        created = dt.datetime.strptime(tags["swarm:created-at"], "%Y-%m-%dT%H:%M:%S.%fZ")  # ms: orders launches
        expires = dt.datetime.strptime(tags["swarm:expires-at"], "%Y-%m-%dT%H:%M:%SZ")
        assert (expires - created).total_seconds() == pytest.approx(90 * 60, abs=2)
        assert node.expires_at == pytest.approx(before + 90 * 60, abs=5)
        assert node.lifecycle == "on-demand" and node.ssh.user == "ubuntu"
        assert node.instance_type == "c5.large" and node.zone
        assert node.ssh.host == node.private_ip and node.private_ip.startswith("10.77.1.")
        assert node.name == ""
    volumes = aws.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": list(by_id)}])
    assert len(volumes["Volumes"]) == 6
    for vol in volumes["Volumes"]:
        assert tags_of(vol)["swarm:stack"] == "alpha"
        owner = by_id[vol["Attachments"][0]["InstanceId"]]
        assert tags_of(vol)["swarm:role"] == tags_of(owner)["swarm:role"]

    listed = provider.list_nodes(stack)
    assert sorted(n.id for n in listed) == sorted(by_id)
    assert [n.id for n in provider.list_nodes(stack, "master")] == [master[0].id]
    assert len(provider.list_nodes(stack, "worker")) == 5
    assert all(n.launched_at and n.state in ("pending", "running") for n in listed)


def test_security_group_has_exactly_swarms_rules(aws, subnet):
    provider, stack = make(subnet)
    provider.prepare(stack)
    provider.prepare(stack)                 # idempotent: still one group, same rules
    (group,) = groups_of(aws, "alpha")
    gid = group["GroupId"]
    assert group["GroupName"] == "swarm-alpha"
    assert tags_of(group)["swarm:role"] == "stack" and tags_of(group)["swarm:created-at"]

    def rules():
        (g,) = aws.describe_security_groups(GroupIds=[gid])["SecurityGroups"]
        out = set()
        for p in g["IpPermissions"]:
            head = (p["IpProtocol"], p.get("FromPort"), p.get("ToPort"))
            out |= {head + (r["CidrIp"],) for r in p["IpRanges"]}
            out |= {head + (r["CidrIpv6"],) for r in p["Ipv6Ranges"]}
            out |= {head + (u["GroupId"],) for u in p["UserIdGroupPairs"]}
        return out

    assert rules() == {("tcp", 22, 22, SSH_CIDR), ("tcp", 5557, 5558, gid)}

    # Someone opens SSH to the world: the next prepare puts the rules back to exactly swarm's.
    aws.authorize_security_group_ingress(GroupId=gid, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
        {"IpProtocol": "tcp", "FromPort": 8089, "ToPort": 8089, "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}])
    provider.prepare(stack)
    assert rules() == {("tcp", 22, 22, SSH_CIDR), ("tcp", 5557, 5558, gid)}

    # A new ssh_cidr replaces the old SSH source instead of adding to it.
    moved, _ = make(subnet, ssh_cidr="198.51.100.0/24")
    moved.prepare(stack)
    assert rules() == {("tcp", 22, 22, "198.51.100.0/24"), ("tcp", 5557, 5558, gid)}
    assert len(groups_of(aws, "alpha")) == 1

    (node,) = provider.create_nodes(stack, "master", 1)
    (inst,) = instances(aws, "alpha")
    assert [g["GroupId"] for g in inst["NetworkInterfaces"][0]["Groups"]] == [gid]


def test_ssh_never_opened_to_the_world():
    for cidr in ("0.0.0.0/0", "::/0"):
        with pytest.raises(ProviderError, match="whole internet"):
            ec2_setup.ssh_cidr(cidr)
        with pytest.raises(swarm_config.ConfigError):
            make_config(ssh_cidr=cidr)


def test_ttl_user_data_and_shutdown_behaviour(aws, subnet):
    provider, stack = make(subnet, ttl="2h")
    (node,) = provider.create_nodes(stack, "master", 1)
    data = aws.describe_instance_attribute(InstanceId=node.id, Attribute="userData")
    script = base64.b64decode(data["UserData"]["Value"]).decode()
    assert script.startswith("#!/bin/sh\n")
    assert "shutdown -h +120 " in script                   # the first node: the whole TTL
    assert node.expires_at and abs(node.expires_at - (time.time() + 7200)) < 60
    (later,) = provider.create_nodes(stack, "worker", 1)
    assert later.expires_at == node.expires_at              # the stack's, not a new TTL
    behaviour = aws.describe_instance_attribute(InstanceId=node.id,
                                                Attribute="instanceInitiatedShutdownBehavior")
    assert behaviour["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"


def test_wait_ready_returns_refreshed_nodes(aws, subnet):
    provider, stack = make(subnet)
    nodes = provider.create_nodes(stack, "worker", 3)
    ready = provider.wait_ready(stack, nodes, timeout=30)
    assert [n.id for n in ready] == [n.id for n in nodes]
    assert all(n.state == "running" and n.private_ip and n.ssh.host == n.private_ip
               for n in ready)


def test_wait_ready_is_bounded(aws, subnet):
    provider, stack = make(subnet)
    nodes = provider.create_nodes(stack, "worker", 2)

    def stuck(parsed, **kw):            # every describe says "pending", forever
        for r in parsed.get("Reservations", []):
            for i in r["Instances"]:
                i["State"] = {"Code": 0, "Name": "pending"}

    provider.ec2.meta.events.register("after-call.ec2.DescribeInstances", stuck)
    started = time.monotonic()
    with pytest.raises(ProviderError, match="did not reach 'running' within") as err:
        provider.wait_ready(stack, nodes, timeout=0.1)
    # 50x the timeout given, for a busy machine; a waiter ignoring it polls for minutes
    assert time.monotonic() - started < 5
    assert "\n" not in str(err.value)


def test_public_connect_uses_public_ip(aws, subnet):
    provider, stack = make(subnet, connect="public")
    (node,) = provider.wait_ready(stack, provider.create_nodes(stack, "master", 1), timeout=10)
    assert node.public_ip and node.ssh.host == node.public_ip


# ---------------------------------------------------------------- terminating, stacks, cleanup

def test_terminate_three_of_five_workers_leaves_two(aws, subnet):
    provider, stack = make(subnet)
    master, workers = up(provider, stack, 5)
    provider.terminate_nodes(stack, workers[:3])
    left = provider.list_nodes(stack, "worker")
    assert sorted(n.id for n in left) == sorted(n.id for n in workers[3:])
    assert [n.id for n in provider.list_nodes(stack, "master")] == [master[0].id]
    provider.terminate_nodes(stack, workers[:3])     # again: already gone, no error
    provider.terminate_nodes(stack, [])


def test_two_stacks_never_see_each_other(aws, subnet):
    a, stack_a = make(subnet, "alpha")
    b, stack_b = make(subnet, "beta")
    up(a, stack_a, 2)
    b_master, b_workers = up(b, stack_b, 1)
    assert len(a.list_nodes(stack_a)) == 3 and len(b.list_nodes(stack_b)) == 2
    assert not {n.id for n in a.list_nodes(stack_a)} & {n.id for n in b.list_nodes(stack_b)}

    with pytest.raises(ProviderError, match="refusing to terminate"):
        a.terminate_nodes(stack_a, b_workers)
    a.terminate_nodes(stack_a, a.list_nodes(stack_a))
    a.cleanup(stack_a)

    assert instances(aws, "alpha") == []
    assert sorted(n.id for n in b.list_nodes(stack_b)) == sorted(n.id for n in b_master + b_workers)
    assert len(groups_of(aws, "beta")) == 1 and len(key_pairs_of(aws, "beta")) == 1
    assert b.key_path(stack_b).is_file()
    assert groups_of(aws, "alpha") == [] and key_pairs_of(aws, "alpha") == []


def test_down_leaves_nothing_and_cleanup_is_idempotent(aws, subnet):
    provider, stack = make(subnet)
    up(provider, stack, 2)
    key = provider.key_path(stack)
    assert key.is_file()

    with pytest.raises(ProviderError, match="still has 3 instance"):
        provider.cleanup(stack)              # nodes first
    assert len(groups_of(aws, "alpha")) == 1

    provider.terminate_nodes(stack, provider.list_nodes(stack))
    provider.cleanup(stack)
    assert instances(aws, "alpha") == [] and provider.list_nodes(stack) == []
    assert groups_of(aws, "alpha") == [] and key_pairs_of(aws, "alpha") == []
    assert not key.exists() and not key.parent.exists()

    deletes = [record_calls(provider, op) for op in ("DeleteSecurityGroup", "DeleteKeyPair",
                                                     "TerminateInstances")]
    provider.cleanup(stack)                  # nothing left: a no-op
    make(subnet)[0].cleanup(stack)           # also from a fresh process
    assert deletes == [[], [], []]
    assert groups_of(aws, "alpha") == [] and key_pairs_of(aws, "alpha") == []


# ---------------------------------------------------------------- AMI, keys, network

def test_ami_aliases_resolve_through_ssm(aws, subnet, images):
    for alias, user in (("ubuntu-22.04", "ubuntu"), ("ubuntu-24.04", "ubuntu"), ("al2023", "ec2-user")):
        provider, stack = make(subnet, f"s{alias.replace('.', '')}", ami=alias)
        (node,) = provider.create_nodes(stack, "master", 1)
        (inst,) = instances(aws, stack.name)
        if alias in images:
            assert inst["ImageId"] == images[alias]
        else:
            ssm = boto3.client("ssm", region_name=REGION)
            param = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
            assert inst["ImageId"] == ssm.get_parameter(Name=param)["Parameter"]["Value"]
        assert node.ssh.user == user and node.image_id == inst["ImageId"]
    if "ubuntu-24.04/arm64" in images:       # a Graviton type picks the arm64 parameter
        provider, stack = make(subnet, "graviton", worker_type="c7g.large")
        (node,) = provider.create_nodes(stack, "worker", 1)
        assert node.image_id == images["ubuntu-24.04/arm64"]


def test_raw_ami_id_is_used_as_is(aws, subnet, images):
    provider, stack = make(subnet, ami=images["ubuntu-22.04"], ssh_user="admin")
    (node,) = provider.create_nodes(stack, "master", 1)
    assert node.image_id == images["ubuntu-22.04"] and node.ssh.user == "admin"
    provider, stack = make(subnet, "other", ami=images["ubuntu-22.04"])
    assert provider.create_nodes(stack, "master", 1)[0].ssh.user == "ubuntu"


@pytest.mark.parametrize("kwargs, count, error, match", [
    ({}, 0, UsageError, "ask for 1 to 500"),
    ({}, 501, UsageError, "ask for 1 to 500"),
    ({}, True, UsageError, "ask for 1 to 500"),
    ({"ami": "ami-0123456789abcdef0"}, 2, ProviderError, "AMI ami-0123456789abcdef0 .* not found"),
    ({"worker_type": "c5.hyper"}, 2, ProviderError, "instance type 'c5.hyper' does not exist"),
])
def test_bad_input_launches_nothing(aws, subnet, kwargs, count, error, match):
    provider, stack = make(subnet, **kwargs)
    runs = record_calls(provider, "RunInstances")
    with pytest.raises(error, match=match) as err:
        provider.create_nodes(stack, "worker", count)
    assert "\n" not in str(err.value)
    assert runs == [] and instances(aws) == []
    assert groups_of(aws, "alpha") == [] and key_pairs_of(aws, "alpha") == []


def test_too_many_user_tags_launch_nothing(aws, subnet):
    provider, stack = make(subnet, tags={f"k{i}": "v" for i in range(43)})
    with pytest.raises(UsageError, match="at most 42 tags"):
        provider.create_nodes(stack, "master", 1)
    with pytest.raises(UsageError, match="at most 42 tags"):
        provider.prepare(stack)
    assert instances(aws) == [] and groups_of(aws, "alpha") == [] and key_pairs_of(aws, "alpha") == []


def test_bad_role_and_missing_alias_parameter(aws, subnet, monkeypatch):
    provider, stack = make(subnet)
    with pytest.raises(UsageError, match="unknown role"):
        provider.create_nodes(stack, "boss", 1)
    monkeypatch.setitem(ec2_setup.AMI_ALIASES, "ubuntu-24.04",
                        ("ubuntu", "/aws/service/canonical/nope/ami-id", "/aws/service/nope-arm"))
    with pytest.raises(ProviderError, match="no public SSM parameter /aws/service/canonical/nope"):
        provider.create_nodes(stack, "master", 1)
    assert instances(aws) == []


def test_generated_key_is_private_and_kept_per_stack(aws, subnet, tmp_path):
    provider, stack = make(subnet)
    provider.prepare(stack)
    key = provider.key_path(stack)
    assert key == tmp_path / "state" / "ec2" / REGION / "alpha" / "id_swarm"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    (pair,) = key_pairs_of(aws, "alpha")
    assert pair["KeyName"] == "swarm-alpha" and tags_of(pair)["swarm:role"] == "stack"
    (node,) = provider.create_nodes(stack, "master", 1)
    assert instances(aws, "alpha")[0]["KeyName"] == "swarm-alpha"

    key.unlink()                       # the pair exists, its private half is lost
    fresh, _ = make(subnet)
    with pytest.raises(ProviderError, match="exists in AWS but its private key .* cannot be recovered"):
        fresh.prepare(stack)


def test_user_key_pair(aws, subnet, tmp_path):
    aws.create_key_pair(KeyName="mine")
    key = tmp_path / "mine.pem"
    key.write_text("secret")
    key.chmod(0o644)
    provider, stack = make(subnet, key_name="mine", key_file=str(key))
    with pytest.raises(ConfigError, match="chmod 600"):
        provider.prepare(stack)
    key.chmod(0o600)
    provider.prepare(stack)
    assert key_pairs_of(aws, "alpha") == []            # swarm made none
    (node,) = provider.create_nodes(stack, "master", 1)
    assert instances(aws, "alpha")[0]["KeyName"] == "mine"
    assert provider.key_path(stack) == key
    provider.terminate_nodes(stack, [node])
    provider.cleanup(stack)
    assert key.is_file() and aws.describe_key_pairs(KeyNames=["mine"])["KeyPairs"]

    missing, stack = make(subnet, key_name="nope", key_file=str(key))
    with pytest.raises(ProviderError, match="key pair 'nope' does not exist"):
        missing.prepare(stack)
    gone, stack = make(subnet, key_name="mine", key_file=str(tmp_path / "absent.pem"))
    with pytest.raises(ConfigError, match="not found"):
        gone.prepare(stack)


def test_invalid_subnet_end_to_end(aws, subnet):
    provider, stack = make("subnet-0123456789abcdef0")
    match = "subnet not found .*InvalidSubnetID.NotFound.*subnet_id"
    with pytest.raises(ProviderError, match=match) as e:
        provider.create_nodes(stack, "master", 1)
    assert "\n" not in str(e.value) and instances(aws) == []


def test_default_vpc_and_no_default_vpc(aws, images):
    provider, stack = make(None)
    (node,) = provider.create_nodes(stack, "master", 1)        # moto's default VPC
    provider.terminate_nodes(stack, [node])
    provider.cleanup(stack)

    (vpc,) = aws.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    for sub in aws.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["Subnets"]:
        aws.delete_subnet(SubnetId=sub["SubnetId"])
    aws.delete_vpc(VpcId=vpc["VpcId"])
    provider, stack = make(None)
    match = f"region {REGION} has no default VPC; set \\[ec2\\] subnet_id"
    with pytest.raises(ProviderError, match=match):
        provider.create_nodes(stack, "master", 1)
    assert instances(aws) == []


def test_region_comes_from_session_or_errors(aws, subnet, monkeypatch):
    cfg = make_config(subnet_id=subnet, region=None)
    assert Ec2Provider(cfg).region == REGION            # AWS_DEFAULT_REGION
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    with pytest.raises(ProviderError, match="no AWS region configured"):
        Ec2Provider(cfg).list_nodes(Stack.from_config(cfg))


# ---------------------------------------------------------------- spot

def test_spot_falls_back_to_on_demand(aws, subnet):
    provider, stack = make(subnet, spot=True)
    seen = []

    def no_spot(params, **kw):
        seen.append("InstanceMarketOptions" in params)
        if "InstanceMarketOptions" in params:
            raise ClientError({"Error": {"Code": "InsufficientInstanceCapacity",
                                         "Message": "no spot capacity"}}, "RunInstances")

    provider.ec2.meta.events.register("before-parameter-build.ec2.RunInstances", no_spot)
    said: list[str] = []
    provider.progress = said.append
    nodes = provider.create_nodes(stack, "worker", 3)
    assert seen == [True, False]
    assert len(instances(aws, "alpha")) == 3
    assert all(i.get("InstanceLifecycle") != "spot" for i in instances(aws, "alpha"))
    assert all(n.lifecycle == "on-demand" for n in nodes)
    fell = [s for s in said if "spot" in s]
    assert len(fell) == 1 and "on-demand" in fell[0], said
    assert "InsufficientInstanceCapacity" in said[0]


def test_spot_when_available_and_other_errors_not_swallowed(aws, subnet):
    provider, stack = make(subnet, spot=True)
    nodes = provider.create_nodes(stack, "worker", 2)
    assert all(n.lifecycle == "spot" for n in nodes) and provider.notices == []

    def limit(params, **kw):
        raise _client_error("VcpuLimitExceeded", "too many")

    provider.ec2.meta.events.register("before-parameter-build.ec2.RunInstances", limit)
    with pytest.raises(ProviderError, match="quota is reached"):
        provider.create_nodes(stack, "worker", 2)
    assert len(instances(aws, "alpha")) == 2 and provider.notices == []


def test_failure_after_launch_terminates_what_was_launched(aws, subnet, monkeypatch):
    provider, stack = make(subnet)
    provider.prepare(stack)

    def broken(*a, **kw):
        raise RuntimeError("boom")

    monkeypatch.setattr(provider, "_node", broken)
    with pytest.raises(RuntimeError, match="boom"):
        provider.create_nodes(stack, "worker", 4)
    assert len(instances(aws, "alpha", ["terminated"])) == 4
    assert instances(aws, "alpha", LIVE) == []
    assert "terminated the 4 instance(s)" in provider.notices[-1]


# ---------------------------------------------------------------- check-ip, runner, errors

def test_checkip_never_called_when_ssh_cidr_set(aws, subnet, checkip_calls):
    provider, stack = make(subnet)
    up(provider, stack, 1)
    provider.terminate_nodes(stack, provider.list_nodes(stack))
    provider.cleanup(stack)
    assert checkip_calls == []


def test_checkip_used_when_ssh_cidr_unset(aws, subnet, monkeypatch):
    monkeypatch.setattr(ec2_setup, "lookup_public_ip", lambda timeout=5.0: "198.51.100.23")
    provider, stack = make(subnet, ssh_cidr=None, connect="public")   # private: tests/test_reach.py
    provider.prepare(stack)
    (group,) = groups_of(aws, "alpha")
    ssh = [p for p in group["IpPermissions"] if p["FromPort"] == 22]
    assert ssh[0]["IpRanges"][0]["CidrIp"] == "198.51.100.23/32"


def test_checkip_failure_is_a_clear_error(monkeypatch):
    seen = []

    def offline(url, timeout):
        seen.append((url, timeout))
        raise OSError("network unreachable")

    monkeypatch.setattr(ec2_setup.urllib.request, "urlopen", offline)
    with pytest.raises(ProviderError, match=r"set \[ec2\] ssh_cidr") as err:
        REAL_LOOKUP()
    assert seen == [("https://checkip.amazonaws.com", 5.0)] and "\n" not in str(err.value)


def test_runner_points_at_the_node(aws, subnet, monkeypatch):
    made = []
    fake = types.ModuleType("swarm.remote.ssh")
    fake.SSHRunner = lambda **kw: made.append(kw) or kw
    monkeypatch.setitem(sys.modules, "swarm.remote.ssh", fake)
    provider, stack = make(subnet)
    (node,) = provider.wait_ready(stack, provider.create_nodes(stack, "master", 1), 10)
    provider.runner(stack, node)
    (kw,) = made
    state = provider.key_path(stack).parent
    assert kw == {"host": node.private_ip, "port": 22, "user": "ubuntu",
                  "key_file": state / "id_swarm", "known_hosts": state / "known_hosts",
                  "label": node.id, "route": DIRECT}
    assert provider.name == "ec2" and provider.runs_bootstrap and provider.can_ssh


def _client_error(code, message="details here\nsecond line"):
    return ClientError({"Error": {"Code": code, "Message": message}}, "RunInstances")


@pytest.mark.parametrize("exc, match", [
    (NoCredentialsError(), "no AWS credentials found"),
    (NoRegionError(), "no AWS region configured"),
    (_client_error("ExpiredToken"), "credentials expired"),
    (_client_error("RequestExpired"), "credentials expired"),
    (_client_error("UnauthorizedOperation", "You are not authorized to perform this operation."),
     "not allowed to .*UnauthorizedOperation.*grant this IAM identity"),
    (_client_error("InvalidAMIID.NotFound"), "AMI not usable .*InvalidAMIID.NotFound.*\\[ec2\\] ami"),
    (_client_error("InvalidAMIID.Malformed"), "AMI not usable"),
    (_client_error("InsufficientInstanceCapacity"), "no capacity"),
    (_client_error("VcpuLimitExceeded"), "quota is reached.*details here second line.*quota"),
    (_client_error("InstanceLimitExceeded"), "quota is reached"),
    (EndpointConnectionError(endpoint_url="https://ec2.xx-nowhere-1.amazonaws.com/"),
     "cannot reach the AWS EC2 endpoint.*region"),
    (_client_error("UnknownRegion"), "cannot reach the AWS EC2 endpoint"),
    (_client_error("InvalidSubnetID.NotFound"), "subnet not found.*subnet_id"),
    (_client_error("SomethingNew", "odd\nthing"),
     "AWS error SomethingNew while trying to launch.*odd thing"),
])
def test_error_translation_is_one_line(exc, match):
    err = translate(exc, "launch 3 nodes", REGION)
    assert isinstance(err, ProviderError)
    assert "\n" not in str(err) and len(str(err)) <= 400
    assert __import__("re").search(match, str(err)), str(err)
    with pytest.raises(ProviderError, match=match):
        with aws_errors("launch 3 nodes", REGION):
            raise exc


def test_no_credentials_end_to_end(aws, subnet, monkeypatch):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var)
    provider, stack = make(subnet)
    with pytest.raises(ProviderError, match="no AWS credentials found"):
        provider.list_nodes(stack)


def test_state_dir_is_never_the_source_of_truth(aws, subnet, tmp_path):
    provider, stack = make(subnet)
    up(provider, stack, 2)
    for p in sorted((tmp_path / "state").rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    fresh, _ = make(subnet)
    assert len(fresh.list_nodes(stack)) == 3
    fresh.terminate_nodes(stack, fresh.list_nodes(stack))
    fresh.cleanup(stack)
    assert groups_of(aws, "alpha") == [] and key_pairs_of(aws, "alpha") == []
    assert not os.path.exists(tmp_path / "state" / "ec2" / REGION / "alpha")
