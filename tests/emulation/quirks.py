"""EC2 as AWS documents it, not as moto answers: the quirks the emulated cloud injects.

moto is instantly consistent. AWS is not ("Eventual consistency in the Amazon EC2 API",
EC2 API reference): a resource just created may be "not found" by the next call that uses it,
and a security group stays held by the network interfaces of terminated instances for a
while, so `DeleteSecurityGroup` answers `DependencyViolation` (Terraform retries that for
5 minutes). Each quirk has a switch; `EmulatedEC2` turns them all on by default.

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
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field


@dataclass
class Quirks:
    group_not_found: bool = True
    key_not_found: bool = True
    group_held_s: float = 2.0
    reuse_ips: bool = True
    sshd_late_s: float = 3.0
    fresh_groups: set[str] = field(default_factory=set)
    fresh_keys: set[str] = field(default_factory=set)
    last_terminate: float = 0.0
    answered: list[tuple[str, str]] = field(default_factory=list)   # (action, code) injected
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def off(self) -> Quirks:
        """moto as it is: every quirk switched off (for tests about something else)."""
        self.group_not_found = self.key_not_found = self.reuse_ips = False
        self.group_held_s = self.sshd_late_s = 0.0
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

    def answer(self, action: str, params: dict[str, str]) -> tuple[str, str] | None:
        """(code, message) of the AWS error this call gets, or None to let moto serve it."""
        with self._lock:
            got = self._answer(action, params)
            if got is not None:
                self.answered.append((action, got[0]))
            return got

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
