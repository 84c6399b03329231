"""Instances behind a bastion: the lab's two-bridge topology (the controller reaches only the
bastion's public address; the instances' subnet only through it), proven with OpenSSH; then
`connect = "bastion"` as users run it, in that topology; then the bastion's logic alone."""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import boto3
import moto
import pytest

from swarm.errors import ConfigError
from swarm.providers.ec2.bastion import Bastion
from swarm.providers.ec2.setup import SshFrom
from swarm.remote.base import Hop, Route
from tests.emulation.plugin import launch_in_lab
from tests.helpers import assert_error_line, fake_aws_env, swarm
from tests.reliability import ec2_toml, fast_bootstrap, instances, security_groups


def iptables_output() -> list[str]:
    return subprocess.run(["iptables", "-w", "10", "-S", "OUTPUT"], capture_output=True,
                          text=True, check=True, timeout=20).stdout.splitlines()


def openssh(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ssh", "-F", str(config), *args], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


def behind_the_bastion(emulated_ec2, subnet_id: str, bastion, key_path: Path):
    """An instance without a public IP whose group takes SSH from the bastion's group and from
    the controller's own address on the lab bridge: only the topology keeps the controller out."""
    instance_id, host, _ = launch_in_lab(emulated_ec2, subnet_id, "node", key_path, {
        "UserIdGroupPairs": [{"GroupId": bastion.group_id}],
        "IpRanges": [{"CidrIp": f"{emulated_ec2.lab.bridge_ip}/32"}]})
    found = emulated_ec2.client().describe_instances(InstanceIds=[instance_id])
    assert "PublicIpAddress" not in found["Reservations"][0]["Instances"][0]
    return host


def test_the_lab_reaches_instances_only_through_the_bastion(lab, emulated_ec2, ec2_env, bastion,
                                                            bridge_target, tmp_path):
    node = behind_the_bastion(emulated_ec2, ec2_env.subnet_id, bastion, tmp_path / "node_key")
    known = tmp_path / "known_hosts"
    known.write_text(f"{bastion.host.known_hosts_line_at(bastion.address)}\n"
                     f"{node.known_hosts_line}\n")
    config = tmp_path / "ssh_config"
    config.write_text(f"Host *\n  IdentityFile {bastion.key_path}\n  IdentityFile "
                      f"{tmp_path / 'node_key'}\n  IdentitiesOnly yes\n  UserKnownHostsFile "
                      f"{known}\n  StrictHostKeyChecking yes\n  BatchMode yes\n"
                      "  ConnectTimeout 5\n")
    jump = f"{bastion.user}@{bastion.address}"
    assert bastion.address.startswith("54.") and bastion.host.ip.startswith("10.77.1.")
    direct = openssh(config, f"root@{node.ip}", "hostname")
    assert direct.returncode == 0 and direct.stdout.strip() == node.name, direct.stderr
    rules = iptables_output()

    with lab.cut_off():
        assert len(iptables_output()) == len(rules) + 1
        through = openssh(config, "-J", jump, f"root@{node.ip}", "hostname")
        assert through.returncode == 0, through.stderr
        assert through.stdout.strip() == node.name
        direct = openssh(config, f"root@{node.ip}", "hostname")
        assert direct.returncode == 255 and "Connection refused" in direct.stderr, direct.stderr
        # What the instances open to the controller (their load on the target) still flows.
        load = node.exec(["python3", "-c", "import urllib.request as u; "
                          f"print(u.urlopen('{bridge_target.url}/health', timeout=5).status)"])
        assert load.stdout.strip() == "200", load.stderr

    assert iptables_output() == rules


# ---- connect = "bastion": the CLI as users run it, with the controller cut off ----

STACK = "behind"


@pytest.fixture
def agent(bastion, tmp_path):
    """The user's ssh-agent, holding the key the bastion takes (what both swarm and OpenSSH
    offer a jump host no IdentityFile names). -> SSH_AUTH_SOCK"""
    sock = tmp_path / "agent.sock"
    proc = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.05)
        subprocess.run(["ssh-add", str(bastion.key_path)], env={**os.environ,
                       "SSH_AUTH_SOCK": str(sock)}, check=True, capture_output=True, timeout=20)
        yield str(sock)
    finally:
        proc.kill()
        proc.wait(timeout=10)


def bastion_stack(workdir: Path, cli_env: dict, ec2_env, bastion, agent: str) -> dict:
    """A stack reached through the bastion: no ssh_cidr, so its port 22 is opened to the
    bastion's group."""
    toml = ec2_toml(workdir, ec2_env.subnet_id, name=STACK)
    text = toml.read_text()
    plain = 'ssh_cidr = "10.77.0.0/16"\nconnect = "private"\n'
    assert plain in text
    toml.write_text(text.replace(
        plain, f'connect = "bastion"\nbastion = "{bastion.user}@{bastion.address}"\n'))
    fast_bootstrap(workdir)
    return {**cli_env, **ec2_env.env, "SSH_AUTH_SOCK": agent}


def node_id(workdir: Path, env: dict, name: str) -> str:
    res = swarm("status", "--json", cwd=workdir, env=env, timeout=60)
    assert res.code == 0, res.err
    return next(n["id"] for n in json.loads(res.out)["nodes"] if n["name"] == name)


def ssh_rules(ec2) -> list[dict]:
    """The stack's group's ingress, normalised for comparing (descriptions and order aside)."""
    (group,) = security_groups(ec2, STACK)
    return sorted(({"ports": (p["FromPort"], p["ToPort"]),
                    "cidrs": sorted(r["CidrIp"] for r in p.get("IpRanges", [])),
                    "v6": p.get("Ipv6Ranges", []), "prefixes": p.get("PrefixListIds", []),
                    "groups": sorted(g["GroupId"] for g in p.get("UserIdGroupPairs", []))}
                   for p in group["IpPermissions"]), key=str)


def test_the_headline_flow_through_a_bastion(workdir, cli_env, ec2_env, emulated_ec2, bastion,
                                             agent, cut_off, bridge_target, tmp_path):
    env = bastion_stack(workdir, cli_env, ec2_env, bastion, agent)
    res = swarm("up", "master", cwd=workdir, env=env, timeout=180)
    assert res.code == 0, res.err
    res = swarm("up", "workers", "-n", "2", cwd=workdir, env=env, timeout=180)
    assert res.code == 0, res.err
    ec2 = emulated_ec2.client()
    nodes = instances(ec2, STACK)
    assert len(nodes) == 3 and all("PublicIpAddress" not in i for i in nodes)
    (group,) = security_groups(ec2, STACK)
    assert ssh_rules(ec2) == sorted([
        {"ports": (22, 22), "cidrs": [], "v6": [], "prefixes": [], "groups": [bastion.group_id]},
        {"ports": (5557, 5558), "cidrs": [], "v6": [], "prefixes": [],
         "groups": [group["GroupId"]]}], key=str)

    res = swarm("run", "-H", bridge_target.url, "-f", "viral_load.py", "--headless", "-u", "4",
                "-r", "4", "-t", "3s", cwd=workdir, env=env, timeout=180)
    assert res.code == 0, res.err
    assert "2 of 2 worker process(es) connected" in res.err
    out = sorted((workdir / "results" / STACK).iterdir())[-1]
    record = json.loads((out / "run.json").read_text())
    assert record["summary"]["total"]["requests"] > 0 and (out / "logs/worker-2.log").is_file()
    worker = emulated_ec2.host_for(node_id(workdir, env, "worker-1"))
    res = swarm("ssh", "worker-1", "--", "hostname", cwd=workdir, env=env, timeout=60)
    assert res.code == 0 and res.out.strip() == worker.name, res.err
    res = swarm("logs", "worker-1", cwd=workdir, env=env, timeout=60)
    assert res.code == 0 and f"{worker.name}/INFO/locust.main: Starting Locust" in res.out
    # every login was through the bastion, and its key is pinned with the nodes'
    known = (tmp_path / "state" / "ec2" / "us-east-1" / STACK / "known_hosts").read_text()
    assert bastion.host.known_hosts_line_at(bastion.address) in known.splitlines()

    res = swarm("killall", cwd=workdir, env=env)
    assert res.code == 0, res.err
    res = swarm("down", cwd=workdir, env=env, timeout=120)
    assert res.code == 0, res.err
    assert instances(ec2, STACK) == [] and security_groups(ec2, STACK) == []
    assert list(emulated_ec2.hosts) == [bastion.instance_id]


def test_a_changed_host_key_behind_the_bastion_is_refused(workdir, cli_env, ec2_env,
                                                          emulated_ec2, bastion, agent,
                                                          cut_off, tmp_path):
    env = bastion_stack(workdir, cli_env, ec2_env, bastion, agent)
    assert swarm("up", "master", cwd=workdir, env=env, timeout=180).code == 0
    (master,) = emulated_ec2.hosts.keys() - {bastion.instance_id}
    known = tmp_path / "state" / "ec2" / "us-east-1" / STACK / "known_hosts"
    pinned = known.read_text()

    emulated_ec2.host_for(master).regen_host_key()          # the node, behind the bastion
    res = swarm("logs", "master", cwd=workdir, env=env)
    assert_error_line(res, 1, "host key changed", "master (")
    assert known.read_text() == pinned
    bastion.host.regen_host_key()                           # the bastion itself
    res = swarm("logs", "master", cwd=workdir, env=env)
    assert_error_line(res, 1, "host key changed", f"jump host {bastion.user}@{bastion.address}")
    assert known.read_text() == pinned
    assert swarm("down", cwd=workdir, env=env, timeout=120).code == 0


# ---- the bastion's logic alone: its ssh_config entry, and who it opens port 22 to ----

def test_a_bastion_alias_is_read_from_the_ssh_config(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "config").write_text(
        "Host gate\n  HostName 203.0.113.10\n  User ec2-user\n  Port 2222\n"
        "  IdentityFile ~/.ssh/gate.pem\nHost nobody\n  HostName 203.0.113.11\n"
        "Host piped\n  User u\n  ProxyCommand nc %h %p\n")
    assert Bastion("gate").route() == Route(jumps=(
        Hop("203.0.113.10", 2222, "ec2-user", (tmp_path / ".ssh" / "gate.pem",)),))
    (hop,) = Bastion("ubuntu@198.51.100.7:2200").route().jumps
    assert (hop.host, hop.port, hop.user) == ("198.51.100.7", 2200, "ubuntu")
    for name, needle in (("nobody", "names no user"), ("piped", "ProxyCommand")):
        with pytest.raises(ConfigError, match=needle):
            Bastion(name).route()


def test_port_22_opens_to_the_bastions_groups_or_to_ssh_cidr(monkeypatch, tmp_path):
    fake_aws_env(monkeypatch, tmp_path, "us-east-1")
    with moto.mock_aws():
        ec2 = boto3.client("ec2", region_name="us-east-1")
        vpc, other = (ec2.create_vpc(CidrBlock=c)["Vpc"]["VpcId"]
                      for c in ("10.1.0.0/16", "10.2.0.0/16"))
        ids = {}
        for name, v, cidr in (("here", vpc, "10.1.1.0/24"), ("there", other, "10.2.1.0/24")):
            sub = ec2.create_subnet(VpcId=v, CidrBlock=cidr)["Subnet"]["SubnetId"]
            gid = ec2.create_security_group(GroupName=name, Description=name,
                                            VpcId=v)["GroupId"]
            inst = ec2.run_instances(ImageId="ami-785db401", MinCount=1, MaxCount=1,
                                     NetworkInterfaces=[{
                                         "DeviceIndex": 0, "SubnetId": sub, "Groups": [gid],
                                         "AssociatePublicIpAddress": True}])["Instances"][0]
            found = ec2.describe_instances(InstanceIds=[inst["InstanceId"]])
            ids[name] = (gid, found["Reservations"][0]["Instances"][0])
        gid, here = ids["here"]
        for address in (here["PublicIpAddress"], here["PrivateIpAddress"]):
            assert Bastion(f"u@{address}").ssh_from(ec2, None, vpc, "us-east-1") == \
                SshFrom(groups=(gid,))
        assert Bastion(f"u@{here['PublicIpAddress']}").ssh_from(
            ec2, "192.0.2.0/24", vpc, "us-east-1") == SshFrom(("192.0.2.0/24",))
        there = ids["there"][1]["PublicIpAddress"]
        with pytest.raises(ConfigError, match="outside the stack's VPC"):
            Bastion(f"u@{there}").ssh_from(ec2, None, vpc, "us-east-1")
        with pytest.raises(ConfigError, match="not the address of an instance in us-east-1"):
            Bastion("u@192.0.2.9").ssh_from(ec2, None, vpc, "us-east-1")
