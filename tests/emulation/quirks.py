"""EC2 as AWS documents it, not as moto answers: the quirks the emulated cloud injects.

moto is instantly consistent. AWS is not ("Eventual consistency in the Amazon EC2 API",
EC2 API reference): a resource just created may be "not found" by the next call that uses it,
and a security group stays held by the network interfaces of terminated instances for a
while, so `DeleteSecurityGroup` answers `DependencyViolation` (Terraform retries that for
5 minutes). Each quirk has a switch; `EmulatedEC2` turns the consistency, held-group,
IP-reuse and late-sshd ones on by default; the per-zone and account-policy ones are set
by the tests about them:

- `group_not_found`: the first call that uses a just-created security group
  (AuthorizeSecurityGroupIngress, RunInstances) answers `InvalidGroup.NotFound`.
- `key_not_found`: the first RunInstances naming a just-created or imported key pair answers
  `InvalidKeyPair.NotFound`.
- `profile_not_found`: the first RunInstances naming a just-created IAM instance profile
  (`IamInstanceProfile.Name`) answers `InvalidParameterValue` "Value (NAME) for parameter
  iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name": IAM is eventually
  consistent ("Changes that I make are not always immediately visible", IAM User Guide), and
  EC2 refuses a profile made seconds ago this way (Terraform retries it for 2 minutes).
- `group_held_s`: DeleteSecurityGroup answers `DependencyViolation` until this many seconds
  after the last TerminateInstances (0: off).
- `reuse_ips`: a terminated instance's private IP goes to the next instance launched in its
  subnet (moto frees it only when Python collects the instance), which is a new emulated host
  with a new host key, as on EC2.
- `sshd_late_s`: an instance's sshd starts about this many seconds after RunInstances
  returns; until then its address refuses connections (the instance is `running` while it
  still boots: EC2 User Guide, "Connect to your instance": wait for the status checks).
- `instance_not_found`: the first DescribeInstances or TerminateInstances naming a
  just-launched instance by id (`InstanceId.N`) answers `InvalidInstanceID.NotFound`; a
  DescribeInstances naming it in an `instance-id` filter gets an answer without it (AWS
  filters answer with what they find, never NotFound). Once per instance, so flows stay
  fast (AWS, "Eventual consistency in the Amazon EC2 API": a call right after RunInstances
  may not find the instance yet; retry with exponential backoff).
- `no_capacity` = {(zone, instance type)}: RunInstances in that zone (its subnet's) answers
  `InsufficientInstanceCapacity` (HTTP 500, a server error) with AWS's text naming the zones
  that have the type ("Error codes for the Amazon EC2 API": a server error; "Troubleshoot
  Amazon EC2 instance launch issues": insufficient instance capacity). Off unless set.
- `unsupported` = {(zone, instance type)}: RunInstances there answers `Unsupported` ("Your
  requested instance type (…) is not supported in your requested Availability Zone (…)", as
  EC2 answers it; AWS's advice: DescribeInstanceTypeOfferings to find the zones that offer
  the type), and DescribeInstanceTypeOfferings (availability-zone) leaves the pair out, as AWS's
  does, unless `offerings_agree` is False (a test of RunInstances' own refusal). moto
  already leaves out what AWS does not offer (us-east-1e has no c5). Off unless set.
- `capacity` = {(zone, instance type): n}: that zone has room for n more instances of the
  type. A RunInstances there with MinCount above what is left answers
  `InsufficientInstanceCapacity` (as `no_capacity`); otherwise it launches
  min(MaxCount, left) (RunInstances, MaxCount: "Amazon EC2 launches the largest possible
  number of instances above the specified minimum count"). A repeat of a ClientToken (a
  replay) takes no room. Off unless set. (moto launches MinCount instances, whatever
  MaxCount says; AWS launches MaxCount when it can: the emulator hands moto the count AWS
  would launch as its MinCount, quirk or not.)

Account policy, off by default (switched on by the tests about them), each answering as AWS
does ("Error codes for the Amazon EC2 API", EC2 API reference):
- `vcpu_limit` (None: off): an on-demand RunInstances that would take the running and pending
  on-demand vCPUs of the account over this many answers `VcpuLimitExceeded` with AWS's text
  ("On-Demand Instance quotas", EC2 User Guide: quotas count vCPUs per instance bucket; one
  bucket here, the tests launch standard types).
- `require_imdsv2`: a RunInstances without `MetadataOptions.HttpTokens=required` answers
  `UnauthorizedOperation`, as under the SCP "Require IMDSv2" of the AWS Organizations User
  Guide (its `ec2:MetadataHttpTokens` condition), with the explicit-deny text and the encoded
  authorization failure message an SCP denial carries.
- `spot_capacity` = {(zone, instance type): n}: as `capacity`, for spot launches only (spot
  capacity pools are apart from on-demand's: a zone out of spot c5.large may still launch it
  on-demand). A spot launch of a pair not in it goes by `capacity`. Off unless set.
- `max_spot` (None: off): a spot RunInstances that would make more than this many running or
  pending spot instances answers `MaxSpotInstanceCountExceeded` ("Spot Instance quotas").
- `spot_role_missing`: every spot RunInstances answers
  `AuthFailure.ServiceLinkedRoleCreationNotPermitted` (no AWSServiceRoleForEC2Spot in the
  account, and the caller may not create it: "Service-linked role for Spot Instances").
No spot capacity is an injection (`EmulatedEC2.inject(..., when=spot)`), as EC2 sends it: a 500.

Idempotency, on by default:
- `idempotent_launch`: a RunInstances naming a ClientToken already used in its region by a
  launch that succeeded gets that launch's answer again (the same reservation and instances;
  nothing new is launched); the same token with other parameters answers
  `IdempotentParameterMismatch` ("Ensuring idempotency in Amazon EC2 API requests", EC2
  Developer Guide: the same client token and parameters return the original result; changed
  parameters, other than the Region or Availability Zone, that error; a token is good in
  each Region on its own). moto ignores the token and launches again. The answer that gets
  lost on its way back is an injection (`EmulatedEC2.lose_answer`).
"""
from __future__ import annotations

import base64
import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ACCOUNT = "123456789012"   # moto's account
# (instance type, spot?) of the account's pending and running instances in the call's region
Fleet = Callable[[], "list[tuple[str, bool]]"]

# A code of ours, not AWS's: the call succeeds with nothing found (a filter that misses).
EMPTY = "(empty answer)"
# Not AWS's either: a RunInstances answered from `idempotent_launch` (it never reached moto).
REPLAYED = "(the first launch with this ClientToken)"
# Parameters AWS leaves out of the idempotency comparison (besides the token itself).
NOT_COMPARED = frozenset({"ClientToken", "Placement.AvailabilityZone"})
# Codes EC2 sends as HTTP 500 (server errors); the rest of the quirks' codes are 400s.
SERVER_ERRORS = frozenset({"InsufficientInstanceCapacity"})


@dataclass(frozen=True)
class Place:
    """What the emulator knows of where a launch goes: a subnet's zone, a type's zones."""
    zone_of: Callable[[str], "str | None"]
    offered: Callable[[str], "list[str]"]   # zones of the region offering an instance type


@dataclass
class Quirks:
    group_not_found: bool = True
    key_not_found: bool = True
    profile_not_found: bool = True
    group_held_s: float = 2.0
    reuse_ips: bool = True
    sshd_late_s: float = 3.0
    vcpu_limit: int | None = None
    require_imdsv2: bool = False
    max_spot: int | None = None
    spot_role_missing: bool = False
    idempotent_launch: bool = True

    instance_not_found: bool = True
    no_capacity: set[tuple[str, str]] = field(default_factory=set)
    unsupported: set[tuple[str, str]] = field(default_factory=set)
    capacity: dict[tuple[str, str], int] = field(default_factory=dict)
    spot_capacity: dict[tuple[str, str], int] = field(default_factory=dict)
    offerings_agree: bool = True
    fresh_instances: set[str] = field(default_factory=set)
    fresh_groups: set[str] = field(default_factory=set)
    fresh_keys: set[str] = field(default_factory=set)
    fresh_profiles: set[str] = field(default_factory=set)
    last_terminate: float = 0.0
    # (region, ClientToken) -> (compared parameters, moto's answer) of launches that succeeded
    launches: dict[tuple[str, str], tuple[dict[str, str], Any]] = field(default_factory=dict)
    answered: list[tuple[str, str]] = field(default_factory=list)   # (action, code) injected
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def off(self) -> Quirks:
        """moto as it is: every quirk switched off (for tests about something else)."""
        self.group_not_found = self.key_not_found = self.reuse_ips = False
        self.profile_not_found = False
        self.group_held_s = self.sshd_late_s = 0.0
        self.require_imdsv2 = self.spot_role_missing = False
        self.vcpu_limit = self.max_spot = None
        self.instance_not_found = self.idempotent_launch = False
        self.no_capacity, self.unsupported, self.capacity = set(), set(), {}
        self.spot_capacity = {}
        return self

    def count(self, action: str) -> int:
        """Calls of `action` answered by a quirk (they never reached moto)."""
        with self._lock:
            return sum(1 for a, _ in self.answered if a == action)

    # -- what moto did (from the emulator's hooks) --

    def created_group(self, group_id: str) -> None:
        if self.group_not_found:
            with self._lock:
                self.fresh_groups.add(group_id)

    def created_key(self, name: str) -> None:
        if self.key_not_found:
            with self._lock:
                self.fresh_keys.add(name)

    def created_profile(self, name: str) -> None:
        if self.profile_not_found:
            with self._lock:
                self.fresh_profiles.add(name)

    def launched(self, instance_ids: list[str]) -> None:
        if self.instance_not_found:
            with self._lock:
                self.fresh_instances.update(instance_ids)

    def launched_with_token(self, region: str, params: dict[str, str], answer: Any) -> None:
        """moto served a RunInstances that named a ClientToken: its answer is the one every
        later call with that token gets."""
        token = params.get("ClientToken")
        if self.idempotent_launch and token:
            with self._lock:
                self.launches.setdefault((region, token), (_compared(params), answer))

    def offered(self, zone: str, instance_type: str) -> bool:
        """Whether DescribeInstanceTypeOfferings lists the pair (moto listed it)."""
        return not self.offerings_agree or (zone, instance_type) not in self.unsupported

    def terminated(self) -> None:
        with self._lock:
            self.last_terminate = time.monotonic()

    # -- what a call gets instead of moto's answer --

    def replay(self, action: str, params: dict[str, str], region: str) -> tuple[str, Any] | None:
        """(REPLAYED, the first launch's answer) for a RunInstances repeating its ClientToken
        with the same parameters, ("IdempotentParameterMismatch", message) with others;
        None: a launch for moto to make."""
        token = params.get("ClientToken")
        if action != "RunInstances" or not self.idempotent_launch or not token:
            return None
        with self._lock:
            known = self.launches.get((region, token))
            if known is None:
                return None
            got: tuple[str, Any] = (REPLAYED, known[1])
            if known[0] != _compared(params):
                got = ("IdempotentParameterMismatch",
                       "Arguments on this idempotent request are inconsistent with arguments "
                       f"used in previous request(s) with client token {token}")
            self.answered.append((action, got[0]))
            return got

    def answer(self, action: str, params: dict[str, str], region: str = "",
               fleet: Fleet = list, place: Place | None = None) -> tuple[str, str] | None:
        """(code, message) of the AWS error this call gets (code EMPTY: an answer that found
        nothing), or None to let moto serve it."""
        with self._lock:
            got = (self._policy(action, params, region) or self._answer(action, params)
                   or self._capacity(action, params, place))
            if got is None and action == "RunInstances":
                got = self._quota(params, fleet)
            if got is not None:
                self.answered.append((action, got[0]))
            return got

    def _policy(self, action: str, params: dict[str, str], region: str) -> tuple[str, str] | None:
        """What the account's policies refuse: checked before anything else, as IAM is."""
        if action != "RunInstances":
            return None
        if self.require_imdsv2 and params.get("MetadataOptions.HttpTokens") != "required":
            return "UnauthorizedOperation", scp_denial("ec2:RunInstances", region, "instance/*")
        if self.spot_role_missing and _is_spot(params):
            return ("AuthFailure.ServiceLinkedRoleCreationNotPermitted",
                    "The provided credentials do not have permission to create the "
                    "service-linked role for EC2 Spot Instances.")
        return None

    def _quota(self, params: dict[str, str], fleet: Fleet) -> tuple[str, str] | None:
        # MaxCount: "between 1 and the quota for the number of instances allowed" (RunInstances)
        count = int(params.get("MaxCount") or params.get("MinCount", "1"))
        if _is_spot(params):
            if self.max_spot is None:
                return None
            if sum(spot for _, spot in fleet()) + count > self.max_spot:
                return "MaxSpotInstanceCountExceeded", "Max spot instance count exceeded"
            return None
        if self.vcpu_limit is None:
            return None
        used = sum(vcpus(itype) for itype, spot in fleet() if not spot)
        if used + count * vcpus(params.get("InstanceType", "m1.small")) > self.vcpu_limit:
            return ("VcpuLimitExceeded",
                    "You have requested more vCPU capacity than your current vCPU limit of "
                    f"{self.vcpu_limit} allows for the instance bucket that the specified "
                    "instance type belongs to. Please visit "
                    "http://aws.amazon.com/contact-us/ec2-request to request an adjustment to "
                    "this limit.")
        return None

    def _answer(self, action: str, params: dict[str, str]) -> tuple[str, str] | None:
        if action in ("AuthorizeSecurityGroupIngress", "RevokeSecurityGroupIngress",
                      "RunInstances"):
            groups = {v for k, v in params.items()
                      if k == "GroupId" or "SecurityGroupId" in k}
            for g in sorted(groups & self.fresh_groups):
                self.fresh_groups.discard(g)
                return "InvalidGroup.NotFound", f"The security group '{g}' does not exist"
        if action == "RunInstances" and params.get("KeyName") in self.fresh_keys:
            name = params["KeyName"]
            self.fresh_keys.discard(name)
            return "InvalidKeyPair.NotFound", f"The key pair '{name}' does not exist"
        if action == "RunInstances" and params.get("IamInstanceProfile.Name") in self.fresh_profiles:
            name = params["IamInstanceProfile.Name"]
            self.fresh_profiles.discard(name)
            return ("InvalidParameterValue", f"Value ({name}) for parameter iamInstanceProfile.name "
                    "is invalid. Invalid IAM Instance Profile name")
        if action in ("DescribeInstances", "TerminateInstances") and self.fresh_instances:
            named = {v for k, v in params.items() if k.startswith("InstanceId.")}
            filtered = {v for k, v in params.items() if k.startswith("Filter.")
                        and ".Value." in k
                        and params.get(k.split(".Value.")[0] + ".Name") == "instance-id"}
            fresh = (named | filtered) & self.fresh_instances
            if fresh:
                self.fresh_instances -= fresh
                if named & fresh:
                    return ("InvalidInstanceID.NotFound",
                            f"The instance ID '{sorted(named & fresh)[0]}' does not exist")
                return EMPTY, f"instance-id filter on just-launched {', '.join(sorted(fresh))}"
        if action == "DeleteSecurityGroup" and self.group_held_s > 0:
            if time.monotonic() - self.last_terminate < self.group_held_s:
                return ("DependencyViolation",
                        f"resource {params.get('GroupId', '?')} has a dependent object")
        return None

    def granted(self, params: dict[str, str], region: str, place: Place) -> int:
        """How many instances a RunInstances moto is about to serve launches, as AWS would:
        MaxCount, or what `capacity` leaves the zone (then taken from its room)."""
        most = int(params.get("MaxCount") or params.get("MinCount", "1"))
        with self._lock:
            zone, itype = _zone(params, place), params.get("InstanceType", "m1.small")
            token = params.get("ClientToken")
            pool = self._pool(params, zone, itype)
            if (zone, itype) not in pool or (region, token or "") in self.launches:
                return most
            grant = min(most, pool[zone, itype])
            pool[zone, itype] -= grant
            return grant

    def _pool(self, params: dict[str, str], zone: str | None,
              itype: str) -> dict[tuple[str, str], int]:
        """The room a launch takes from: spot's own where `spot_capacity` names the pair."""
        if _is_spot(params) and (zone, itype) in self.spot_capacity:
            return self.spot_capacity
        return self.capacity

    def _capacity(self, action: str, params: dict[str, str],
                  place: Place | None) -> tuple[str, str] | None:
        if action != "RunInstances" or place is None or not (
                self.no_capacity or self.unsupported or self.capacity or self.spot_capacity):
            return None
        itype = params.get("InstanceType", "m1.small")
        zone = _zone(params, place)
        if zone is None:
            return None
        pool = self._pool(params, zone, itype)
        short = {z for (z, t), left in pool.items() if t == itype and left <= 0}
        refused = {z for z, t in self.no_capacity | self.unsupported if t == itype} | short
        others = ", ".join(z for z in place.offered(itype) if z != zone and z not in refused)
        if (zone, itype) in self.unsupported:
            return ("Unsupported",
                    f"Your requested instance type ({itype}) is not supported in your requested "
                    f"Availability Zone ({zone}). Please retry your request by not specifying "
                    f"an Availability Zone or choosing {others}.")
        room = pool.get((zone, itype))
        if pool is self.spot_capacity and room is not None and int(
                params.get("MinCount", "1")) > room:
            return ("InsufficientInstanceCapacity",
                    "There is no Spot capacity available that matches your request.")
        if (zone, itype) in self.no_capacity or (
                room is not None and int(params.get("MinCount", "1")) > room):
            return ("InsufficientInstanceCapacity",
                    f"We currently do not have sufficient {itype} capacity in the Availability "
                    f"Zone you requested ({zone}). Our system will be working on provisioning "
                    f"additional capacity. You can currently get {itype} capacity by not "
                    f"specifying an Availability Zone in your request or choosing {others}.")
        return None


def _zone(params: dict[str, str], place: Place) -> str | None:
    """The zone a RunInstances launches in: its subnet's, or the one it names."""
    subnet = params.get("SubnetId") or params.get("NetworkInterface.1.SubnetId")
    return (place.zone_of(subnet) if subnet else None) or params.get("Placement.AvailabilityZone")


def _compared(params: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in params.items() if k not in NOT_COMPARED}


def _is_spot(params: dict[str, str]) -> bool:
    return params.get("InstanceMarketOptions.MarketType") == "spot"


def vcpus(itype: str) -> int:
    """vCPUs of an instance type, from moto's copy of DescribeInstanceTypes."""
    from moto.ec2.models.instance_types import INSTANCE_TYPES

    return int(INSTANCE_TYPES.get(itype, {}).get("VCpuInfo", {}).get("DefaultVCpus", 1))


def scp_denial(what: str, region: str, resource: str) -> str:
    """An explicit deny by a service control policy, as AWS words it: who, what, on which
    resource, then the encoded authorization failure message (opaque, ~1 KB, no spaces)."""
    arn = f"arn:aws:ec2:{region or 'us-east-1'}:{ACCOUNT}:{resource}"
    seed = f"{what} {arn}".encode()
    blob = b"".join(hashlib.sha512(seed + bytes([i])).digest() for i in range(12))
    encoded = base64.urlsafe_b64encode(blob).decode().rstrip("=")
    return (f"You are not authorized to perform this operation. User: "
            f"arn:aws:iam::{ACCOUNT}:user/x is not authorized to perform: {what} on resource: "
            f"{arn} with an explicit deny in a service control policy. Encoded authorization "
            f"failure message: {encoded}")
