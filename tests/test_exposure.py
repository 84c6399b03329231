"""Exposure audit of a real cycle (moto + emulated hosts + the real bootstrap + real Locust):

* the stack's instances use its one security group, whose ingress is exactly SSH from
  ssh_cidr and Locust's ports from the group itself: nothing else, 0.0.0.0/0 and ::/0 least of
  all (egress stays open on purpose: the load has to reach the target);
* the key files swarm wrote are 0600 in a 0700 directory;
* Locust's web UI listens on the master's loopback only (and is refused from outside);
* the AWS secret key and session token appear nowhere: not in any output (with --debug, errors
  included), not in the results, the state dir, the hosts' files, or the environment of any
  process on the hosts;
* known_hosts pinning refuses a host whose key was swapped.
"""
from __future__ import annotations

import json
import os
import re
import socket
import stat
import uuid
from pathlib import Path

from tests.helpers import assert_error_line, swarm
from tests.reliability import ec2_toml, instances, locust_pids, poll, security_groups

STACK = "audit"
SSH_CIDR = "10.77.0.0/16"           # ec2_toml's ssh_cidr


def rule_set(group) -> set[tuple]:
    """(protocol, from, to, kind, source) of every ingress source of a security group."""
    rules = set()
    for perm in group["IpPermissions"]:
        head = (perm["IpProtocol"], perm.get("FromPort"), perm.get("ToPort"))
        rules |= {head + ("cidr", r["CidrIp"]) for r in perm.get("IpRanges", [])}
        rules |= {head + ("cidr", r["CidrIpv6"]) for r in perm.get("Ipv6Ranges", [])}
        rules |= {head + ("group", p["GroupId"]) for p in perm.get("UserIdGroupPairs", [])}
        rules |= {head + ("prefix", p["PrefixListId"]) for p in perm.get("PrefixListIds", [])}
    return rules


def listeners(host) -> list[tuple[str, int]]:
    """(address, port) of every listening TCP socket on an emulated host, via `ss`."""
    out = host.exec("ss -Hltn", check=True).stdout
    found = []
    for line in out.splitlines():
        local = line.split()[3]                       # State Recv-Q Send-Q Local Peer
        addr, _, port = local.rpartition(":")
        found.append((addr.strip("[]"), int(port)))
    return found


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()] if root.exists() else []


def test_exposure_audit(workdir, cli_env, ec2_env, emulated_ec2, bridge_target, tmp_path):
    secret = f"SwArMsEcReT{uuid.uuid4().hex}"
    token = f"SwArMtOkEn{uuid.uuid4().hex}"
    env = {**cli_env, **ec2_env.env, "AWS_SECRET_ACCESS_KEY": secret, "AWS_SESSION_TOKEN": token}
    ec2_toml(workdir, ec2_env.subnet_id, name=STACK)       # the real bootstrap/bootstrap.sh
    outputs: list[str] = []

    def cli(*args, code=0, timeout=180):
        res = swarm("--debug", *args, cwd=workdir, env=env, timeout=timeout)
        outputs.extend([res.out, res.err])
        assert res.code == code, (args, res.err)
        return res

    cli("up", "master")
    cli("up", "workers", "-n", "1")
    cli("status", "--json")
    cli("run", "-H", bridge_target.url, "-f", "signups.py", "-u", "2", "-r", "2")   # UI mode
    ec2 = emulated_ec2.client()
    ids = {n["name"]: n["id"] for n in json.loads(cli("status", "--json").out)["nodes"]}
    master = emulated_ec2.host_for(ids["master"])
    worker = emulated_ec2.host_for(ids["worker-1"])

    # -- security groups: every group of every instance, and every group tagged with the stack
    # exactly swarm's two rules: SSH from ssh_cidr, Locust's ports from the group itself (the
    # config has no bastion: nothing else may reach the nodes); the lab enforces them
    (gid,) = {g["GroupId"] for g in security_groups(ec2, STACK)}
    used = {g["GroupId"] for i in instances(ec2, STACK)
            for g in i["SecurityGroups"] + [g for n in i["NetworkInterfaces"] for g in n["Groups"]]}
    assert used == {gid}
    (group,) = ec2.describe_security_groups(GroupIds=[gid])["SecurityGroups"]
    assert rule_set(group) == {("tcp", 22, 22, "cidr", SSH_CIDR), ("tcp", 5557, 5558, "group", gid)}

    # -- key files
    state = tmp_path / "state" / "ec2" / "us-east-1" / STACK
    key = state / "id_swarm"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) & 0o077 == 0
    for p in files_under(tmp_path / "state"):
        if b"PRIVATE KEY" in p.read_bytes():
            assert stat.S_IMODE(p.stat().st_mode) == 0o600, p

    # -- Locust's web UI: the master's loopback only
    web = 8089
    poll(lambda: any(port == web for _, port in listeners(master)), timeout=30, what="the web UI")
    ui = [a for a, port in listeners(master) if port == web]
    assert ui == ["127.0.0.1"], ui
    assert not any(port == web for _, port in listeners(worker))
    with socket.socket() as s:
        s.settimeout(3)
        assert s.connect_ex((master.ip, web)) != 0          # refused from the network
    assert locust_pids(master) and locust_pids(worker)

    # -- a headless run, logs, an error under --debug, killall: more output to search
    cli("run", "-H", bridge_target.url, "-f", "signups.py", "--headless", "-u", "2", "-r", "2",
        "-t", "3s")
    cli("logs", "all")
    cli("logs", "--bootstrap", "master")
    emulated_ec2.inject("DescribeInstances", "AuthFailure", status=401, times=1,
                        message="AWS was not able to validate the provided access credentials")
    res = cli("status", code=1)
    assert "AuthFailure" in res.err
    cli("killall")

    # -- no secret anywhere
    texts = {"cli output": "\n".join(outputs)}
    for root in (workdir / "results", tmp_path / "state"):
        for p in files_under(root):
            texts[str(p)] = p.read_bytes().decode(errors="replace")
    for host in (master, worker):
        for p in files_under(host.home / "swarm"):
            if "venv" not in p.parts:
                texts[f"{host.ip}:{p}"] = p.read_bytes().decode(errors="replace")
        for pid in host.pids():
            try:
                texts[f"{host.ip} pid {pid} environ"] = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
            except OSError:
                pass
    assert any("bootstrap" in k for k in texts) and any("locust.log" in k for k in texts)
    leaks = [k for k, v in texts.items() if secret in v or token in v]
    assert leaks == []
    assert os.environ.get("AWS_SECRET_ACCESS_KEY") != secret    # the test process never had it

    # -- known_hosts pinning refuses a swapped host key
    known = state / "known_hosts"
    pinned = known.read_text()
    assert worker.ip in pinned and master.ip in pinned
    worker.regen_host_key()
    res = swarm("run", "-H", bridge_target.url, "-f", "signups.py", "--headless", "-t", "2s",
                "--require-all", cwd=workdir, env=env, timeout=120)
    assert_error_line(res, 1, "host key changed", "worker-1")
    assert known.read_text() == pinned
    res = swarm("logs", "worker-1", cwd=workdir, env=env)
    assert res.code == 1 and "host key changed" in res.err
    assert re.search(r"delete its line in .*known_hosts", res.err)

    res = swarm("down", cwd=workdir, env=env, timeout=120)
    assert res.code == 0, res.err
    assert instances(ec2, STACK) == [] and not key.exists()
