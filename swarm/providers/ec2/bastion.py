"""connect = "bastion": the stack's instances have no public address and take SSH only from a
bastion (a jump host) that swarm reaches first.

`[ec2] bastion` is `user@host[:port]` or an alias of the user's ssh_config (HostName, User,
Port, IdentityFile, its own ProxyJump), read as `ssh` would (remote/sshconfig.py). When the
bastion is an EC2 instance of the stack's VPC, found by its address (public or private IP, or
DNS name), port 22 of the stack's group is opened to the bastion's own security groups:
group-pair rules, right whatever address it has next. Else `[ec2] ssh_cidr` must say where
its SSH comes from as the instances see it (a bastion in another VPC or behind a VPN); set,
it is used as is. Each node's runner goes through the bastion (remote.base.Route), whose host
key is pinned in the stack's known_hosts as the nodes' are.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

from swarm.errors import ConfigError
from swarm.providers.ec2 import setup
from swarm.remote.base import Route

if TYPE_CHECKING:
    from swarm.remote.sshconfig import Resolved

Client = Any
LIVE = ["pending", "running"]


class Bastion:
    """The host every session to the stack's nodes goes through."""

    def __init__(self, address: str):
        self.address = address
        self._found: Resolved | None = None

    def found(self) -> Resolved:
        """Its login as ssh_config gives it (read once, on first use: no network)."""
        if self._found is None:
            from swarm.remote.sshconfig import SshConfig  # fabric: only when it is used

            found = SshConfig().resolve(self.address).require_user("[ec2] bastion", self.address)
            if found.route.proxy_command is not None:
                raise ConfigError(
                    f"[ec2] bastion {self.address!r} is reached by a ProxyCommand: swarm "
                    "cannot jump on from one; name the host after it"
                )
            self._found = found
        return self._found

    def route(self) -> Route:
        """To a node: the bastion's own jumps (its ProxyJump), then the bastion."""
        found = self.found()
        return Route(jumps=(*found.route.jumps, found.hop))

    def ssh_from(
        self, ec2: Client, ssh_cidr: str | None, vpc_id: str, region: str
    ) -> setup.SshFrom:
        """Who may reach the stack's port 22: [ec2] ssh_cidr, else the bastion's groups."""
        if ssh_cidr:
            return setup.SshFrom((setup.ssh_cidr(ssh_cidr),))
        host = self.found().hop.host
        inst = find_instance(ec2, host)
        if inst is None:
            where = f"is not the address of an instance in {region}"
        elif inst.get("VpcId") != vpc_id:
            where = f"is instance {inst['InstanceId']}, outside the stack's VPC {vpc_id}"
        else:
            return setup.SshFrom(groups=groups_of(inst))
        raise ConfigError(
            f"[ec2] bastion {host} {where}: set [ec2] ssh_cidr to the address its SSH "
            "comes from, as the instances see it"
        )


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def groups_of(inst: dict[str, Any]) -> tuple[str, ...]:
    """An instance's security groups: its network interfaces hold them (EC2 lists the
    primary one's as the instance's; an emulator may list only the interfaces')."""
    found = [g["GroupId"] for g in inst.get("SecurityGroups", [])]
    found += [g["GroupId"] for n in inst.get("NetworkInterfaces", []) for g in n.get("Groups", [])]
    return tuple(sorted(set(found)))


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
