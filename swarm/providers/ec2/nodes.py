"""EC2's words become swarm's records here, at the edge: an instance as DescribeInstances
gives it -> a Node."""

from __future__ import annotations

from typing import Any

from swarm.models import Lifecycle, Node, NodeState, Role, SshAddress
from swarm.providers.ec2 import tags
from swarm.providers.ec2.tags import unix_from_iso


def node_of(
    inst: dict[str, Any],
    connect: str,
    default_user: str,
    fallback_tags: dict[str, str] | None = None,
) -> Node:
    """`connect` decides the address swarm's SSH goes to: the public IP, the private one, or
    (connect = "ssm") the instance id, which Session Manager resolves. `fallback_tags`: what
    the launch tagged, for an instance whose tags DescribeInstances does not show yet."""
    found = {**(fallback_tags or {}), **tags.tag_dict(inst)}
    public, private = inst.get("PublicIpAddress"), inst.get("PrivateIpAddress")
    address = public if connect == "public" else private
    if connect == "ssm":
        address = inst["InstanceId"]
    launched = inst.get("LaunchTime")
    spot = inst.get("InstanceLifecycle") == "spot"
    vcpus = found.get(tags.VCPUS, "")
    return Node(
        id=inst["InstanceId"],
        role=Role(found.get(tags.ROLE, "worker")),
        private_ip=private,
        public_ip=public,
        state=NodeState(inst["State"]["Name"]),
        launched_at=launched.timestamp() if launched else None,
        lifecycle=Lifecycle.SPOT if spot else Lifecycle.ON_DEMAND,
        ssh=SshAddress(address, 22, found.get(tags.SSH_USER) or default_user) if address else None,
        instance_type=inst.get("InstanceType"),
        expires_at=unix_from_iso(found.get(tags.EXPIRES_AT)),
        zone=inst.get("Placement", {}).get("AvailabilityZone"),
        image_id=inst.get("ImageId"),
        created_at=unix_from_iso(found.get(tags.CREATED_AT)),
        launch_index=inst.get("AmiLaunchIndex", 0),
        cores=int(vcpus) if vcpus.isdigit() and int(vcpus) > 0 else None,
    )
