"""The records every layer shares: nodes, their roles and states, one host's result.

Provider words (EC2's instance states, a hosts file's entries) become these enums at the edge,
in the provider; nothing above compares bare strings. The enums are `str` subclasses so JSON,
AWS tags and messages see the plain word.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Word(str, Enum):
    """An enum whose members are their own word in f-strings and JSON (on every Python)."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class Role(Word):
    MASTER = "master"
    WORKER = "worker"


class NodeState(Word):
    """EC2's instance states, plus `enrolled` for a `hosts` machine (never powered by swarm)."""

    PENDING = "pending"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    SHUTTING_DOWN = "shutting-down"
    TERMINATED = "terminated"
    ENROLLED = "enrolled"


class Lifecycle(Word):
    ON_DEMAND = "on-demand"
    SPOT = "spot"
    EXISTING = "existing"  # a `hosts` machine
    LOCAL = "local"  # a process group on this machine


@dataclass(frozen=True)
class SshAddress:
    """Where a node's sshd is and who to log in as."""

    host: str
    port: int = 22
    user: str = "root"


@dataclass(frozen=True)
class Node:
    id: str  # provider's id: instance id, "user@host:port", or a local slug
    role: Role
    name: str = ""  # what users type: "master", "worker-1", ... (set by name_nodes)
    private_ip: str | None = None
    public_ip: str | None = None
    state: NodeState = NodeState.RUNNING
    launched_at: float | None = None  # unix seconds
    lifecycle: Lifecycle = Lifecycle.ON_DEMAND
    ssh: SshAddress | None = None  # None: the node is a directory on this machine
    instance_type: str | None = None
    expires_at: float | None = None  # when its TTL powers it off (unix seconds)
    zone: str | None = None
    image_id: str | None = None
    # EC2's LaunchTime has one-second granularity: the creation tag (ms) and the index within
    # one launch call order nodes launched in the same second.
    created_at: float | None = None
    launch_index: int = 0
    # The CPUs the provider says the node has (EC2: its type's vCPUs, tagged at launch), so a
    # headless master's worker count is known before the node says it; None: only it knows.
    cores: int | None = None


@dataclass(frozen=True)
class HostResult:
    """One node's outcome in a fan-out: `value` is what the step returned when `ok`."""

    node: Node
    ok: bool
    output: str = ""
    error: str = ""
    value: Any = None
    reason: str = ""  # why it failed, in a few words, when the step knows (bootstrap's own line)


def order_key(n: Node) -> tuple[float, float, int, str]:
    """Launch order; the id only makes it total."""
    return (n.launched_at or 0.0, n.created_at or 0.0, n.launch_index, n.id)


def stack_expiry(nodes: list[Node]) -> float | None:
    """When the stack powers off: its master's expiry (without the master the stack is of no
    use, and an unreachable master keeps its own), else the earliest; None if no node has one."""
    masters = [n.expires_at for n in nodes if n.role == Role.MASTER and n.expires_at]
    ends = masters or [n.expires_at for n in nodes if n.expires_at]
    return min(ends) if ends else None


def name_nodes(nodes: list[Node]) -> list[Node]:
    """Number workers by launch order (worker-1 is the oldest) so names are stable."""
    masters = [n for n in nodes if n.role == Role.MASTER]
    workers = sorted((n for n in nodes if n.role == Role.WORKER), key=order_key)
    named = [
        replace(m, name="master" if i == 0 else f"master-{i + 1}") for i, m in enumerate(masters)
    ]
    named += [replace(w, name=f"worker-{i + 1}") for i, w in enumerate(workers)]
    return named


@dataclass(frozen=True)
class Probe(Generic[T]):
    """A shell command and the parser of what it prints, kept side by side (pyinfra's facts):
    the pipeline runs `command` through a Runner and hands its stdout to `parse`."""

    command: str
    parse: Callable[[str], T]
