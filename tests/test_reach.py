"""Where a stack reaches, as a user meets it: the whole config checked before anything is
spent, SSH opened to the VPC on connect = "private" (no public-IP lookup), and the stack found
in other regions by `status` and `down`. The CLI runs in a subprocess against the emulated
cloud (moto serves every region on one endpoint and logs the region of each call)."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading

import pytest

from tests.emulation.ec2 import UBUNTU_AMI
from tests.helpers import assert_one_error_line, swarm
from tests.reliability import all_instances, ec2_stack, ec2_toml, fast_bootstrap, instances

OTHER = "eu-west-1"          # where the stack also has an instance (launched there directly)
STALE = "ap-southeast-2"     # where only this machine's state of the stack is left


class Listener:
    """A TCP port on loopback that records every connection (and closes it at once)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.seen = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.seen += 1
            conn.close()

    def close(self):
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def proxy():
    listener = Listener()
    yield listener
    listener.close()


def test_a_typo_in_worker_type_stops_up_master_before_anything_is_launched(
        workdir, cli_env, ec2_env, emulated_ec2):
    """`up master` checks worker_type too: a master launched now would bill until
    `up workers` found the typo."""
    ec2_toml(workdir, ec2_env.subnet_id, name="typo", ec2_extra='worker_type = "c5.lage"\n')
    fast_bootstrap(workdir)
    res = swarm("up", "master", cwd=workdir, env={**cli_env, **ec2_env.env}, timeout=60)
    assert_one_error_line(res, 1, "worker_type", "'c5.lage'")
    for action in ("RunInstances", "CreateSecurityGroup", "CreateKeyPair"):
        assert emulated_ec2.call_count(action) == 0, action
    assert emulated_ec2.call_count("DescribeInstanceTypes") >= 1
    assert all_instances(emulated_ec2.client()) == []


def test_connect_private_opens_ssh_to_the_vpc_range_without_a_public_ip_lookup(
        workdir, cli_env, ec2_env, emulated_ec2, proxy):
    """connect = "private" and no ssh_cidr: port 22 is open to the subnet's VPC range
    (DescribeVpcs), and checkip.amazonaws.com is never asked (an HTTPS proxy on loopback
    would see the request: shown first for the lookup itself)."""
    env = {**cli_env, **ec2_env.env, "HTTPS_PROXY": f"http://127.0.0.1:{proxy.port}"}
    lookup = subprocess.run(
        [sys.executable, "-c", "from swarm.providers.ec2.setup import lookup_public_ip as f; f(3)"],
        env=env, capture_output=True, text=True, timeout=30)
    assert "could not look up this machine's public IP" in lookup.stderr, lookup.stderr
    assert proxy.seen == 1                                # the proxy sees a lookup
    proxy.seen = 0

    toml = ec2_toml(workdir, ec2_env.subnet_id, name="inside")
    toml.write_text(toml.read_text().replace('ssh_cidr = "10.77.0.0/16"\n', ""))
    assert "ssh_cidr" not in toml.read_text()
    fast_bootstrap(workdir)
    res = swarm("up", "master", cwd=workdir, env=env, timeout=180)
    assert res.code == 0, res.err
    ec2 = emulated_ec2.client()
    subnet = ec2.describe_subnets(SubnetIds=[ec2_env.subnet_id])["Subnets"][0]
    vpc_cidr = ec2.describe_vpcs(VpcIds=[subnet["VpcId"]])["Vpcs"][0]["CidrBlock"]
    (group,) = ec2.describe_security_groups(
        Filters=[{"Name": "tag:swarm:stack", "Values": ["inside"]}])["SecurityGroups"]
    ssh = [p for p in group["IpPermissions"] if p.get("FromPort") == 22]
    assert [[r["CidrIp"] for r in p["IpRanges"]] for p in ssh] == [[vpc_cidr]], group
    assert proxy.seen == 0
    assert emulated_ec2.call_count("DescribeVpcs") >= 1
    res = swarm("down", cwd=workdir, env=env, timeout=180)
    assert res.code == 0, res.err


def test_status_and_down_find_the_stack_in_other_regions(workdir, cli_env, ec2_env,
                                                         emulated_ec2, tmp_path):
    """The stack has a worker in eu-west-1 (the region was changed since) and this machine's
    state of it in ap-southeast-2. `status` reads the local state (free) and asks only that
    region; `down` with nothing here asks every region and names what it found; `down
    --all-regions` removes both; nothing is left anywhere."""
    env = ec2_stack(workdir, cli_env, ec2_env, "roam")
    other = emulated_ec2.client("ec2", region=OTHER)
    other.run_instances(ImageId=UBUNTU_AMI, InstanceType="c5.large", MinCount=1, MaxCount=1,
                        TagSpecifications=[{"ResourceType": "instance", "Tags": [
                            {"Key": "swarm:stack", "Value": "roam"},
                            {"Key": "swarm:role", "Value": "worker"}]}])
    stale = tmp_path / "state" / "ec2" / STALE / "roam"
    stale.mkdir(parents=True)
    (stale / "known_hosts").write_text("")

    def cli(*args: str) -> str:
        res = swarm(*args, cwd=workdir, env=env, timeout=180)
        assert res.code == 0, (args, res.err)
        return res.err

    emulated_ec2.calls.clear()
    err = cli("status")
    assert (f"stack roam also has local state in {STALE} (no instances; its key pair or "
            "security group may be left there): `swarm down --all-regions` or set [ec2] "
            "region") in err, err
    assert OTHER not in err                              # status asks no region blindly
    asked = {r for s, a, r in emulated_ec2.calls if a == "DescribeInstances"}
    assert asked == {"us-east-1", STALE}, asked

    res = swarm("status", "--all-regions", "--json", cwd=workdir, env=env, timeout=180)
    assert res.code == 0, res.err
    found = {e["region"]: e for e in json.loads(res.out)["other_regions"]}
    assert set(found) == {OTHER, STALE}, found
    assert found[OTHER]["instances"] == 1 and not found[OTHER]["local_state"]
    assert [n["role"] for n in found[OTHER]["nodes"]] == ["worker"]
    assert found[STALE] == {"region": STALE, "instances": 0, "local_state": True, "error": None}

    emulated_ec2.calls.clear()
    err = cli("down")
    assert (f"stack roam also has 1 instance(s) in {OTHER}: `swarm down --all-regions` or set "
            "[ec2] region") in err, err
    asked = {r for s, a, r in emulated_ec2.calls if a == "DescribeInstances"}
    assert len(asked) >= 17 and OTHER in asked, asked   # nothing here: every region is asked
    assert len(instances(other, "roam")) == 1             # a warning, not a termination

    err = cli("down", "--all-regions")
    assert f"in {OTHER}:" in err and f"in {STALE}:" in err, err
    assert instances(other, "roam") == []
    assert not stale.exists()
    err = cli("status", "--all-regions")
    assert "also has" not in err, err
