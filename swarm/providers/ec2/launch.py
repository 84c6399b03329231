"""Where instances are launched and the calls that name them just after.

Zones: with [ec2] subnet_id the launch goes there and nowhere else; without it, to the
default VPC's default subnets (one per zone) whose zone offers both instance types
(DescribeInstanceTypeOfferings), in zone order, the next one when a zone has no capacity or
does not take the type (batches.py launches there). The stack's security group is per VPC, so
it holds in every one.

Just-launched instances: EC2 is eventually consistent ("Eventual consistency in the Amazon EC2
API"): for a few seconds after RunInstances a call naming the new ids may answer
`InvalidInstanceID.NotFound`; those calls are retried (aws.JUST_CREATED, bounded).
Plain functions over a boto3 EC2 client; callers wrap them in `aws_errors(...)` (`wait`
wraps its own).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from swarm.errors import ProviderError
from swarm.providers.ec2 import ssm
from swarm.providers.ec2.aws import (
    ANSWER_LOST,
    ANSWER_LOST_WAIT_S,
    JUST_CREATED,
    JUST_CREATED_WAIT_S,
    chunks,
    retry_while,
)
from swarm.providers.ec2.errors import aws_errors

Client = Any


@dataclass(frozen=True)
class Subnet:
    id: str
    zone: str
    vpc_id: str
    free: int  # available IP addresses


@dataclass(frozen=True)
class Placement:
    """The subnets a launch may use, best first; `chosen`: [ec2] subnet_id (no fallback)."""

    subnets: tuple[Subnet, ...]
    chosen: bool
    offered: dict[str, tuple[str, ...]]  # instance type -> the region's zones offering it
    skipped: tuple[str, ...]  # what the user is told about zones left out

    @property
    def vpc_id(self) -> str:
        return self.subnets[0].vpc_id

    def with_room(self, count: int) -> tuple[Subnet, ...]:
        room = tuple(s for s in self.subnets if s.free >= count)
        if not room:
            s = self.subnets[0]
            raise ProviderError(
                f"subnet {s.id} has only {s.free} free addresses for {count} nodes: "
                "ask for fewer or set a bigger [ec2] subnet_id"
            )
        return room


def _subnet(s: dict[str, Any]) -> Subnet:
    return Subnet(
        s["SubnetId"],
        s.get("AvailabilityZone", ""),
        s["VpcId"],
        int(s.get("AvailableIpAddressCount", 1 << 20)),
    )


def zones_offering(ec2: Client, types: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """instance type -> the zones of the client's region that offer it, sorted."""
    pages = ec2.get_paginator("describe_instance_type_offerings").paginate(
        LocationType="availability-zone",
        Filters=[{"Name": "instance-type", "Values": sorted(set(types))}],
    )
    found: dict[str, set[str]] = {t: set() for t in types}
    for page in pages:
        for o in page["InstanceTypeOfferings"]:
            found.setdefault(o["InstanceType"], set()).add(o["Location"])
    return {t: tuple(sorted(z)) for t, z in found.items()}


def not_offered(subnet: Subnet, itype: str, zones: tuple[str, ...], region: str) -> str:
    """What the user is told when [ec2] subnet_id's zone does not take an instance type."""
    if not zones:
        return (
            f"{itype} is offered in no zone of {region}: pick another [ec2] master_type/worker_type"
        )
    return (
        f"[ec2] subnet_id {subnet.id} is in {subnet.zone}, which does not offer {itype} "
        f"(the zones of {region} that do: {', '.join(zones)}): set a subnet_id in one of "
        "them, or leave subnet_id out"
    )


def find_placement(
    ec2: Client, subnet_id: str | None, region: str, types: tuple[str, ...]
) -> Placement:
    """The configured subnet (its zone must offer every type), else the default VPC's
    default subnets in the zones that offer every type."""
    offered = zones_offering(ec2, types)
    if subnet_id:
        chosen = _subnet(ec2.describe_subnets(SubnetIds=[subnet_id])["Subnets"][0])
        for t in types:
            if chosen.zone not in offered[t]:
                raise ProviderError(not_offered(chosen, t, offered[t], region), code="Unsupported")
        return Placement((chosen,), True, offered, ())
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    if not vpcs:
        raise ProviderError(f"region {region} has no default VPC; set [ec2] subnet_id")
    found = ec2.describe_subnets(
        Filters=[
            {"Name": "vpc-id", "Values": [vpcs[0]["VpcId"]]},
            {"Name": "default-for-az", "Values": ["true"]},
        ]
    )["Subnets"]
    if not found:
        raise ProviderError(
            f"the default VPC of {region} has no default subnet; set [ec2] subnet_id"
        )
    subnets = sorted((_subnet(s) for s in found), key=lambda s: (s.zone, s.id))
    usable, skipped = [], []
    for s in subnets:
        missing = [t for t in dict.fromkeys(types) if s.zone not in offered[t]]
        if missing:
            skipped.append(f"{s.zone} does not offer {' or '.join(missing)}: not launching there")
        else:
            usable.append(s)
    if not usable:
        both = " and ".join(dict.fromkeys(types))
        have = "; ".join(f"{t}: {', '.join(offered[t]) or 'none'}" for t in dict.fromkeys(types))
        raise ProviderError(
            f"no zone of {region}'s default VPC offers {both} ({have}): pick other "
            "[ec2] master_type/worker_type, or set [ec2] subnet_id",
            code="Unsupported",
        )
    return Placement(tuple(usable), False, offered, tuple(skipped))


def run_instances(ec2: Client, say: Callable[[str], None] = lambda _: None, **params: Any) -> Any:
    """One launch, whatever the retries: the same ClientToken makes EC2 apply it once.
    The group, key pair and instance profile made a moment ago may not be found yet, and a
    launch's answer may be lost after it happened: all asked again with that token (bounded)."""
    token = uuid.uuid4().hex

    def lost(code: str, waited: float) -> None:
        say(
            f"EC2's answer to the launch was lost ({code}): asking again with the same "
            "ClientToken, which launches nothing twice"
        )

    def launch() -> Any:
        return retry_while(
            lambda: retry_while(
                lambda: ec2.run_instances(ClientToken=token, **params),
                JUST_CREATED,
                JUST_CREATED_WAIT_S,
            ),
            ANSWER_LOST,
            ANSWER_LOST_WAIT_S,
            lost,
        )

    if "IamInstanceProfile" not in params:
        return launch()

    def not_visible(code: str, waited: float) -> None:
        if waited == 0:
            say(
                f"EC2 does not see the new instance profile {params['IamInstanceProfile']['Name']} "
                f"yet (IAM is eventually consistent): retrying for up to "
                f"{ssm.PROFILE_WAIT_S / 60:.0f} min"
            )

    return retry_while(
        launch,
        frozenset({ssm.PROFILE_NOT_VISIBLE}),
        ssm.PROFILE_WAIT_S,
        not_visible,
        ssm.launch_code,
    )


def describe_ids(ec2: Client, ids: list[str]) -> list[dict[str, Any]]:
    """The instances named, found by id; a just-launched one EC2 does not find yet is
    retried (bounded) rather than taken for gone."""

    def one(chunk: list[str]) -> list[dict[str, Any]]:
        pages = ec2.get_paginator("describe_instances").paginate(InstanceIds=chunk)
        return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]

    return [
        i
        for chunk in chunks(ids)
        for i in retry_while(lambda: one(chunk), JUST_CREATED, JUST_CREATED_WAIT_S)  # noqa: B023
    ]


def terminate(ec2: Client, ids: list[str]) -> None:
    """TerminateInstances, retried while EC2 does not find the just-launched ids yet; an
    error is fine if the instances are on their way out anyway (another `swarm down` or
    `up` terminated them a moment ago)."""
    try:
        retry_while(
            lambda: ec2.terminate_instances(InstanceIds=ids), JUST_CREATED, JUST_CREATED_WAIT_S
        )
    except Exception:
        going = {
            i["InstanceId"]
            for i in describe_ids(ec2, ids)
            if i["State"]["Name"] in ("shutting-down", "terminated")
        }
        if not set(ids) <= going:
            raise


def terminate_quietly(ec2: Client, ids: list[str]) -> str:
    """Terminate a failed launch's instances, keeping the launch's error -> what to tell."""
    try:
        terminate(ec2, ids)
        return f"terminated the {len(ids)} instance(s) of the failed launch"
    except Exception as exc:  # noqa: BLE001 - report, keep the original error
        why = " ".join(str(exc).split())[:200]
        return (
            f"could not terminate {', '.join(ids)} after a failed launch ({why}); "
            "terminate them yourself (they carry the swarm:stack tag)"
        )


def wait(
    ec2: Client, waiter_name: str, ids: list[str], timeout: float, poll: float, region: str
) -> str | None:
    """Run a bounded waiter; None when it passed, else a short 'id state, …' summary."""
    from botocore.exceptions import ClientError, WaiterError

    delay = max(0.01, min(poll, timeout / 2)) if timeout > 0 else poll
    attempts = max(1, int(timeout / delay) + 1)
    action = f"wait for {len(ids)} instance(s) to be {waiter_name.split('_')[1]}"
    with aws_errors(action, region):
        waiter = ec2.get_waiter(waiter_name)
        try:
            for chunk in chunks(ids):
                # instance_terminated fails at the first NotFound: a just-launched id
                retry_while(
                    lambda: waiter.wait(
                        InstanceIds=chunk,  # noqa: B023 - called in this turn
                        WaiterConfig={"Delay": delay, "MaxAttempts": attempts},
                    ),
                    JUST_CREATED,
                    JUST_CREATED_WAIT_S,
                )
            return None
        except WaiterError as exc:
            last = exc.last_response or {}
            if last.get("Error", {}).get("Code") not in (None, "InvalidInstanceID.NotFound"):
                raise ClientError(last, "DescribeInstances") from exc
        pages = ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": "instance-id", "Values": ids[:100]}]
        )
        found = [i for page in pages for r in page["Reservations"] for i in r["Instances"]]
    return ", ".join(f"{i['InstanceId']} {i['State']['Name']}" for i in found) or "not found"
