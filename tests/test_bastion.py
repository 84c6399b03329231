"""Instances behind a bastion: the lab's two-bridge topology (the controller reaches only the
bastion's public address; the instances' subnet only through it), proven with OpenSSH."""
from __future__ import annotations

import subprocess
from pathlib import Path

from tests.emulation.plugin import launch_in_lab


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
