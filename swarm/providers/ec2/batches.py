"""RunInstances for many nodes: calls of at most BATCH_MAX instances, across zones.

A call with MinCount = MaxCount = N is all or nothing: a zone one instance short refuses
the whole launch. So each call asks MinCount=1, MaxCount=up to BATCH_MAX, and EC2 launches
the largest number the zone can take (RunInstances, MaxCount: "Amazon EC2 launches the
largest possible number of instances above the specified minimum count"). A zone that gave
fewer than asked, or refused (InsufficientInstanceCapacity, Unsupported), has no more: what
is left goes to the next zone, unless [ec2] subnet_id fixed the zone. Each call has a
ClientToken of its own (launch.run_instances), its instances tagged at creation as every
launch's; throttling (RequestLimitExceeded) is botocore's adaptive retry's, as for every
call. A launch that fails as a whole terminates what it launched before saying why.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from swarm.errors import ProviderError
from swarm.providers.ec2.errors import error_code
from swarm.providers.ec2.launch import (
    Client,
    Placement,
    Subnet,
    not_offered,
    run_instances,
    terminate_quietly,
)

# Instances per RunInstances call: small enough that one call's answer (and a lost answer's
# repeat) stays small and a zone's partial capacity is used, large enough that 500 nodes
# (provider.MAX_COUNT) are 10 calls, well under EC2's RunInstances request rate.
BATCH_MAX = 50
# RunInstances refusals that are about the zone, not the request: another zone may take it.
ZONE_CODES = frozenset({"InsufficientInstanceCapacity", "InsufficientCapacity", "Unsupported"})
SHORT = "InsufficientInstanceCapacity"  # a zone that launched fewer than asked


class OnDemandTried(ProviderError):
    """The on-demand launch of what spot had no room for failed: no fallback to try again."""


@dataclass
class Launched:
    instances: list[dict[str, Any]] = field(default_factory=list)
    zones: dict[str, int] = field(default_factory=dict)  # zone -> instances, in launch order

    def add(self, zone: str, got: list[dict[str, Any]]) -> None:
        self.instances += got
        self.zones[zone] = self.zones.get(zone, 0) + len(got)

    def extend(self, other: Launched) -> None:
        self.instances += other.instances
        for zone, n in other.zones.items():
            self.zones[zone] = self.zones.get(zone, 0) + n

    def where(self) -> str:
        """' in us-east-1b', or ': 3 in us-east-1a, 4 in us-east-1b'."""
        if len(self.zones) == 1:
            return f" in {next(iter(self.zones))}"
        return ": " + ", ".join(f"{n} in {z}" for z, n in self.zones.items())


@contextmanager
def _undone_on_error(ec2: Client, done: Launched, say: Callable[[str], None]) -> Iterator[None]:
    """A launch that fails terminates what it launched, then raises its error."""
    try:
        yield
    except BaseException:
        if done.instances:
            say(terminate_quietly(ec2, [i["InstanceId"] for i in done.instances]))
        raise


def run_in_zones(
    ec2: Client,
    params: dict[str, Any],
    placement: Placement,
    region: str,
    say: Callable[[str], None],
    *,
    partial: bool = False,
) -> Launched:
    """params["MaxCount"] instances in the placement's subnets, in order, BATCH_MAX a call.
    `partial`: fewer than that, when every zone has given what it could (spot, with on-demand
    to launch the rest), rather than a capacity error; none at all is still the error."""
    itype, count = params["InstanceType"], params["MaxCount"]
    spot = "spot " if "InstanceMarketOptions" in params else ""
    done = Launched()
    with _undone_on_error(ec2, done, say):
        subnets = tuple(s for s in placement.subnets if s.free > 0) or placement.with_room(count)
        tried: list[str] = []
        code, refusal = SHORT, None
        for i, sub in enumerate(subnets):
            refusal, here = _zone(ec2, params, sub, count - len(done.instances), say)
            if here:
                done.add(sub.zone, here)
            left = count - len(done.instances)
            if not left:
                return done
            code = error_code(refusal) if refusal is not None else SHORT
            if placement.chosen:
                _chosen_short(sub, itype, count, len(here), refusal, placement, region, spot)
            tried.append(f"{sub.zone}: {code}" if not here else f"{sub.zone}: {len(here)}")
            if i + 1 < len(subnets):
                nxt = subnets[i + 1].zone
                if here:
                    say(
                        f"{sub.zone} had {spot}{itype} capacity for {len(here)} more: "
                        f"launching the other {left} in {nxt}"
                    )
                elif code == "Unsupported":
                    say(f"{itype} refused in {sub.zone} ({code}); trying {nxt}")
                else:
                    say(f"no {spot}{itype} capacity in {sub.zone} ({code}); trying {nxt}")
        if partial and done.instances and code in ZONE_CODES:
            return done
        advice = "retry later, or pick another [ec2] master_type/worker_type"
        raise ProviderError(
            f"no zone of {region} has {itype} capacity for {count} node(s) right now "
            f"(tried {', '.join(tried)}): {advice}",
            code=code,
            action=advice,
        ) from refusal
    raise AssertionError("unreachable: the launch returns or raises")


def _chosen_short(
    sub: Subnet,
    itype: str,
    count: int,
    got: int,
    refusal: Exception | None,
    placement: Placement,
    region: str,
    spot: str,
) -> None:
    """[ec2] subnet_id's zone could not take the whole launch: no other zone is tried."""
    code = error_code(refusal) if refusal is not None else SHORT
    if refusal is not None and not got and code != "Unsupported":
        raise refusal  # the zone's own words (aws_errors says them), as for any call
    if code == "Unsupported":
        zones = tuple(z for z in placement.offered.get(itype, ()) if z != sub.zone)
        raise ProviderError(not_offered(sub, itype, zones, region), code=code) from refusal
    raise ProviderError(
        f"[ec2] subnet_id {sub.id} ({sub.zone}) has {spot}{itype} capacity for "
        f"{got} of {count} node(s) right now ({code}): retry later, ask for "
        "fewer, or leave subnet_id out so other zones are tried",
        code=code,
        action="retry later, or leave [ec2] subnet_id out",
    ) from refusal


def _zone(
    ec2: Client, params: dict[str, Any], sub: Subnet, wanted: int, say: Callable[[str], None]
) -> tuple[Exception | None, list[dict[str, Any]]]:
    """Up to `wanted` instances in one subnet, BATCH_MAX a call, until it gives fewer than
    asked -> (the zone's refusal or None, the instances it launched)."""
    nic = {**params["NetworkInterfaces"][0], "SubnetId": sub.id}
    got: list[dict[str, Any]] = []
    room = sub.free
    for _ in range(-(-wanted // BATCH_MAX)):
        ask = min(BATCH_MAX, wanted - len(got), room - len(got))
        if ask <= 0:
            break
        batch = {**params, "MinCount": 1, "MaxCount": ask, "NetworkInterfaces": [nic]}
        try:
            resp = run_instances(ec2, say, **batch)
        except Exception as exc:
            if error_code(exc) not in ZONE_CODES:
                raise
            return exc, got
        new = resp.get("Instances", [])
        got += new
        if len(new) < ask:
            return None, got
    return None, got


def launch(
    ec2: Client,
    params: dict[str, Any],
    placement: Placement,
    region: str,
    say: Callable[[str], None],
    what: str,
    rest_on_demand: bool = False,
) -> Launched:
    """run_in_zones, saying where the nodes are (`what`: "worker node(s)"). With
    `rest_on_demand` (a spot launch that may fall back), what spot had no room for anywhere
    is launched on-demand, and the spot instances are kept: a fallback of the whole launch
    would terminate them and pay on-demand for all. If that launch fails, they go too."""
    done = run_in_zones(ec2, params, placement, region, say, partial=rest_on_demand)
    say(f"launched {len(done.instances)} {what}{done.where()}")
    asked = params["MaxCount"]
    left = asked - len(done.instances)
    if not left:
        return done
    say(
        f"spot had {params['InstanceType']} capacity for {len(done.instances)} of {asked} "
        f"{what}: launching the other {left} on-demand"
    )
    rest = {k: v for k, v in params.items() if k != "InstanceMarketOptions"}
    rest.update(MinCount=left, MaxCount=left)
    with _undone_on_error(ec2, done, say):
        try:
            more = run_in_zones(ec2, rest, placement, region, say)
        except ProviderError as e:
            raise OnDemandTried(str(e), code=e.code, action=e.action) from e
    say(f"launched {len(more.instances)} {what}{more.where()} on-demand")
    done.extend(more)
    return done
