"""EC2 as AWS documents it, not as moto answers: the quirks the emulated cloud injects.

moto is instantly consistent. AWS is not ("Eventual consistency in the Amazon EC2 API",
EC2 API reference): a resource just created may be "not found" by the next call that uses it,
and a security group stays held by the network interfaces of terminated instances for a
while, so `DeleteSecurityGroup` answers `DependencyViolation` (Terraform retries that for
5 minutes). Each quirk has a switch; `EmulatedEC2` turns these on by default:

- `group_not_found`: the first call that uses a just-created security group
  (AuthorizeSecurityGroupIngress, RunInstances) answers `InvalidGroup.NotFound`.
- `key_not_found`: the first RunInstances naming a just-created or imported key pair answers
  `InvalidKeyPair.NotFound`.
- `group_held_s`: DeleteSecurityGroup answers `DependencyViolation` until this many seconds
  after the last TerminateInstances (0: off).
- `reuse_ips`: a terminated instance's private IP goes to the next instance launched in its
  subnet (moto frees it only when Python collects the instance), which is a new emulated host
  with a new host key, as on EC2.
- `sshd_late_s`: an instance's sshd starts about this many seconds after RunInstances
  returns; until then its address refuses connections (the instance is `running` while it
  still boots: EC2 User Guide, "Connect to your instance": wait for the status checks).

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
- `max_spot` (None: off): a spot RunInstances that would make more than this many running or
  pending spot instances answers `MaxSpotInstanceCountExceeded` ("Spot Instance quotas").
- `spot_role_missing`: every spot RunInstances answers
  `AuthFailure.ServiceLinkedRoleCreationNotPermitted` (no AWSServiceRoleForEC2Spot in the
  account, and the caller may not create it: "Service-linked role for Spot Instances").
No spot capacity is an injection (`EmulatedEC2.inject(..., when=spot)`), as EC2 sends it: a 500.
"""
from __future__ import annotations

import base64
import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

ACCOUNT = "123456789012"   # moto's account
# (instance type, spot?) of the account's pending and running instances in the call's region
Fleet = Callable[[], "list[tuple[str, bool]]"]


@dataclass
class Quirks:
    group_not_found: bool = True
    key_not_found: bool = True
    group_held_s: float = 2.0
    reuse_ips: bool = True
    sshd_late_s: float = 3.0
    vcpu_limit: int | None = None
    require_imdsv2: bool = False
    max_spot: int | None = None
    spot_role_missing: bool = False
    fresh_groups: set[str] = field(default_factory=set)
    fresh_keys: set[str] = field(default_factory=set)
    last_terminate: float = 0.0
    answered: list[tuple[str, str]] = field(default_factory=list)   # (action, code) injected
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def off(self) -> Quirks:
        """moto as it is: every quirk switched off (for tests about something else)."""
        self.group_not_found = self.key_not_found = self.reuse_ips = False
        self.group_held_s = self.sshd_late_s = 0.0
        self.require_imdsv2 = self.spot_role_missing = False
        self.group_held_s = 0.0
        self.vcpu_limit = self.max_spot = None
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

    def terminated(self) -> None:
        with self._lock:
            self.last_terminate = time.monotonic()

    # -- what a call gets instead of moto's answer --

    def answer(self, action: str, params: dict[str, str], region: str = "",
               fleet: Fleet = list) -> tuple[str, str] | None:
        """(code, message) of the AWS error this call gets, or None to let moto serve it."""
        with self._lock:
            got = self._policy(action, params, region) or self._answer(action, params)
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
        count = int(params.get("MinCount", "1"))
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
        if action == "DeleteSecurityGroup" and self.group_held_s > 0:
            if time.monotonic() - self.last_terminate < self.group_held_s:
                return ("DependencyViolation",
                        f"resource {params.get('GroupId', '?')} has a dependent object")
        return None


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
