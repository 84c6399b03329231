"""connect = "bastion": the stack's instances have no public address and take SSH only from a
bastion (a jump host) that swarm reaches first.

`[ec2] bastion = "user@host[:port]"`. When the bastion is an EC2 instance of the stack's VPC,
found by its address (public or private IP, or DNS name), port 22 of the stack's group is
opened to the bastion's own security groups: group-pair rules, right whatever address it has
next. Else `[ec2] ssh_cidr` must say where its SSH comes from as the instances see it (a
bastion in another VPC or behind a VPN); set, it is used as is. Each node's runner goes
through one jump (remote.base.Route), whose host key is pinned in the stack's known_hosts as
the nodes' are.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from swarm.config.schema import Ec2Section, parse_host
from swarm.errors import ConfigError
from swarm.providers.ec2 import setup
from swarm.remote.base import Hop, Route

Client = Any
LIVE = ["pending", "running"]


def hop(cfg: Ec2Section) -> Hop:
    user, host, port = parse_host(cfg.bastion)
    return Hop(host, port, user)


def route(cfg: Ec2Section) -> Route:
    return Route(jumps=(hop(cfg),))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def find_instance(ec2: Client, host: str) -> dict[str, Any] | None:
    """The live instance whose public or private address (or DNS name) is `host`."""
    keys = (
        ("ip-address", "private-ip-address") if _is_ip(host) else ("dns-name", "private-dns-name")
    )
    for key in keys:
        filters = [
            {"Name": key, "Values": [host]},
            {"Name": "instance-state-name", "Values": LIVE},
        ]
        resp = ec2.describe_instances(Filters=filters)
        found = [i for r in resp["Reservations"] for i in r["Instances"]]
        if found:
            return found[0]
    return None


def ssh_from(ec2: Client, cfg: Ec2Section, vpc_id: str, region: str) -> setup.SshFrom:
    """Who may reach the stack's port 22: [ec2] ssh_cidr, else the bastion's groups."""
    if cfg.ssh_cidr:
        return setup.SshFrom((setup.ssh_cidr(cfg.ssh_cidr),))
    host = hop(cfg).host
    inst = find_instance(ec2, host)
    groups = tuple(sorted({g["GroupId"] for g in (inst or {}).get("SecurityGroups", [])}))
    if inst is not None and inst.get("VpcId") == vpc_id and groups:
        return setup.SshFrom(groups=groups)
    if inst is None:
        where = f"is not the address of an instance in {region}"
    else:
        where = f"is instance {inst['InstanceId']}, outside the stack's VPC {vpc_id}"
    raise ConfigError(
        f"[ec2] bastion {host} {where}: set [ec2] ssh_cidr to the address its SSH "
        "comes from, as the instances see it"
    )
