"""Security groups enforced on the emulated instances, as EC2 does and moto does not.

Every emulated instance's network namespace gets an iptables ``filter`` table made from the
ingress rules of its security groups in moto's state (``table``):

* loopback and established/related traffic are accepted (a security group is stateful: the
  answers to what the host sent, to the target or to the master, come back);
* each ingress rule accepts its protocol and port range from its CIDRs (IPv4; the hosts have
  IPv6 off) and from the private IPs of the live instances in each group it references
  (``UserIdGroupPairs``); prefix lists are not emulated;
* everything else inbound is dropped, silently, as a security group does (the peer's
  connection attempt times out; nothing answers "refused"); egress stays open (AWS's default).

``Firewalls.sync`` recomputes the tables of every tracked host and loads the ones that changed,
one ``iptables-restore`` of the whole table per host: EmulatedEC2 calls it after every launch,
termination and change of rules or of an instance's groups (ec2.py hooks moto's methods for
that), so a group reference follows instances as they come and go. A new host's table is loaded
before its init starts (``Lab.add_host(firewall=...)``): no packet reaches it unfiltered.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from typing import Any

from .proc import LabError, _run

LIVE = ("pending", "running")


def restore(netns: str, text: str) -> None:
    """Load `text` (one whole iptables table) in the network namespace `netns`: one exec."""
    _run(["nsenter", f"--net=/run/netns/{netns}", "--", "iptables-restore"], input=text)


def group_ids(instance: Any) -> list[str]:
    """The instance's security groups. moto keeps them on its network interfaces (a launch
    with NetworkInterfaces, as swarm's) or on the instance (SecurityGroupIds, and
    ModifyInstanceAttribute, which on AWS replaces the primary interface's groups)."""
    own = list(getattr(instance, "security_groups", None) or [])
    if not own:
        for nic in getattr(instance, "nics", {}).values():
            own.extend(getattr(nic, "_group_set", None) or [])
    return sorted({getattr(g, "id", g) for g in own})


def _snapshot(backend: Any) -> list[Any]:
    """moto's live instances; other threads serve other calls meanwhile: take a snapshot."""
    for _ in range(5):
        try:
            return [i for i in backend.all_instances() if i.state in LIVE]
        except RuntimeError:
            time.sleep(0.01)
    raise LabError("moto's instances kept changing while the firewall read them")


def _match(rule: Any) -> str:
    proto = rule.ip_protocol
    if proto in (None, "-1"):
        return ""
    if proto in ("tcp", "udp"):
        lo, hi = int(rule.from_port), int(rule.to_port)
        return f"-p {proto} -m {proto} --dport {lo}" + (f":{hi}" if hi != lo else "")
    if proto == "icmp":
        kind = int(rule.from_port) if rule.from_port is not None else -1
        return "-p icmp" + (f" --icmp-type {kind}" if kind >= 0 else "")
    return f"-p {proto}"


def table(instance: Any, backend: Any, live: list[Any] | None = None) -> str:
    """The iptables-restore text of the instance's ingress rules (see the module's doc)."""
    live = _snapshot(backend) if live is None else live
    members: dict[str, list[str]] = {}
    for other in live:
        ip = getattr(other, "private_ip", None)
        for gid in group_ids(other):
            if ip:
                members.setdefault(gid, []).append(ip)
    lines = ["*filter", ":INPUT DROP [0:0]", ":FORWARD DROP [0:0]", ":OUTPUT ACCEPT [0:0]",
             "-A INPUT -i lo -j ACCEPT",
             "-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"]
    for gid in group_ids(instance):
        group = backend.get_security_group_from_id(gid)
        if group is None:
            continue
        for rule in list(group.ingress_rules):
            sources = []
            cidr = rule.ip_range.get("CidrIp") if rule.ip_range else None
            if cidr:
                sources.append(str(ipaddress.ip_network(cidr, strict=False)))
            ref = (rule.source_group or {}).get("GroupId")
            if ref:
                sources.extend(f"{ip}/32" for ip in sorted(set(members.get(ref, []))))
            match = _match(rule)
            lines.extend(f"-A INPUT -s {src} {match} -j ACCEPT".replace("  ", " ")
                         for src in sources)
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


class Firewalls:
    """The tables loaded in the tracked hosts' namespaces (instance id -> host, backend)."""

    def __init__(self) -> None:
        self.enabled = True
        self._hosts: dict[str, tuple[Any, Any]] = {}
        self._loaded: dict[str, str] = {}       # netns -> the table it has
        self._lock = threading.Lock()            # one sync at a time: the last reads the latest
        self.loads = 0                           # iptables-restore calls, for tests of the cost

    def initial(self, instance: Any, backend: Any) -> str | None:
        """The table a new host boots with (None: enforcement is off)."""
        return table(instance, backend) if self.enabled else None

    def track(self, instance_id: str, host: Any, backend: Any, loaded: str | None) -> None:
        with self._lock:
            self._hosts[instance_id] = (host, backend)
            if loaded is not None:
                self._loaded[host.netns] = loaded

    def forget(self, instance_id: str) -> None:
        with self._lock:
            entry = self._hosts.pop(instance_id, None)
            if entry is not None:
                self._loaded.pop(entry[0].netns, None)

    def clear(self) -> None:
        with self._lock:
            self._hosts.clear()
            self._loaded.clear()
        self.enabled = True

    def sync(self) -> list[str]:
        """Load every tracked host's table that changed -> errors (never raised: a hook
        raising would make moto answer 500 and botocore retry the call)."""
        errors = []
        with self._lock:
            if not self.enabled:
                return []
            live: dict[int, list[Any]] = {}
            for instance_id, (host, backend) in list(self._hosts.items()):
                try:
                    instance = backend.get_instance(instance_id)
                    if instance.state not in LIVE:
                        continue
                    snap = live.setdefault(id(backend), _snapshot(backend))
                    text = table(instance, backend, snap)
                    if self._loaded.get(host.netns) != text:
                        restore(host.netns, text)
                        self.loads += 1
                        self._loaded[host.netns] = text
                except Exception as exc:  # noqa: BLE001
                    errors.append(f"firewall of {instance_id}: {exc}")
        return errors
