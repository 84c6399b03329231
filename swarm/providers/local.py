"""The `local` provider: nodes are directories on this machine, Locust runs as processes.

The stack's nodes are recorded in <state>/local/<stack>/nodes.json (a flock guards updates);
each node has its own directory, which plays the part of a host's home.
"""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from swarm import paths
from swarm.models import Lifecycle, Node, NodeState, Role
from swarm.providers.base import Provider, Stack
from swarm.providers.records import records
from swarm.remote.local import LocalRunner


class LocalProvider(Provider):
    name = "local"
    runs_bootstrap = False
    can_ssh = False
    keeps_machines = True

    def _dir(self, stack: Stack, create: bool = False) -> Path:
        return paths.stack_dir("local", stack.name, create=create)

    def _node(self, rec: dict[str, Any]) -> Node:
        return Node(
            id=rec["id"],
            role=Role(rec["role"]),
            private_ip="127.0.0.1",
            state=NodeState.RUNNING,
            launched_at=rec["launched_at"],
            lifecycle=Lifecycle.LOCAL,
        )

    def prepare(self, stack: Stack) -> None:
        self._dir(stack, create=True)

    def list_nodes(self, stack: Stack, role: Role | None = None) -> list[Node]:
        with records(self._dir(stack), write=False) as recs:
            return [self._node(r) for r in recs if role is None or r["role"] == role]

    def create_nodes(self, stack: Stack, role: Role, count: int) -> list[Node]:
        now = time.time()
        new: list[dict[str, Any]] = [
            {
                "id": f"{role}-{uuid.uuid4().hex[:8]}",
                "role": str(role),
                "launched_at": now + i * 1e-6,
            }
            for i in range(count)
        ]
        with records(self._dir(stack), write=True) as recs:
            for rec in new:
                (self._dir(stack) / rec["id"]).mkdir(mode=0o700)
            recs.extend(new)
        return [self._node(r) for r in new]

    def terminate_nodes(self, stack: Stack, nodes: list[Node]) -> None:
        ids = {n.id for n in nodes}
        for node in nodes:
            shutil.rmtree(self._dir(stack) / node.id, ignore_errors=True)
        with records(self._dir(stack), write=True) as recs:
            recs[:] = [r for r in recs if r["id"] not in ids]

    def cleanup(self, stack: Stack) -> None:
        d = self._dir(stack)
        if d.exists() and not self.list_nodes(stack):
            shutil.rmtree(d, ignore_errors=True)

    def runner(self, stack: Stack, node: Node) -> LocalRunner:
        return LocalRunner(self._dir(stack) / node.id, node.name or node.id)
