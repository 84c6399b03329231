"""Typed records passed between core, providers and runners."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MASTER = "master"
WORKER = "worker"
ROLES = (MASTER, WORKER)


@dataclass(frozen=True)
class Node:
    id: str                      # provider's id: instance id, "host:port", or a local slug
    role: str                    # MASTER or WORKER
    name: str                    # what users type: "master", "worker-1", ...
    private_ip: str | None = None
    public_ip: str | None = None
    state: str = "running"       # provider's state word (pending, running, stopped, ...)
    launched_at: float | None = None   # unix seconds
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "role": self.role, "name": self.name,
            "private_ip": self.private_ip, "public_ip": self.public_ip,
            "state": self.state, "launched_at": self.launched_at, "meta": dict(self.meta),
        }


@dataclass(frozen=True)
class HostResult:
    node: Node
    ok: bool
    output: str = ""
    error: str = ""
    value: Any = None


def order_key(n: Node) -> tuple:
    """Launch order: LaunchTime has one-second granularity, so the creation tag (ms) and the
    index within one launch call break ties; the id only makes it total."""
    return (n.launched_at or 0.0, n.meta.get("created_at") or 0.0, n.meta.get("launch_index", 0), n.id)


def name_nodes(nodes: list[Node]) -> list[Node]:
    """Number workers by launch order (worker-1 is the oldest) so names are stable."""
    from dataclasses import replace

    masters = [n for n in nodes if n.role == MASTER]
    workers = sorted((n for n in nodes if n.role == WORKER), key=order_key)
    named = [replace(m, name=MASTER if i == 0 else f"master-{i + 1}") for i, m in enumerate(masters)]
    named += [replace(w, name=f"worker-{i + 1}") for i, w in enumerate(workers)]
    return named
