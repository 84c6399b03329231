"""The `local` provider: nodes are directories on this machine, Locust runs as processes.

The stack's nodes are recorded in <state>/local/<stack>/nodes.json (a flock guards updates);
each node has its own directory, which plays the part of a host's home.
"""
from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from pathlib import Path

from swarm import paths
from swarm.locust import kill_cmd
from swarm.models import Node
from swarm.providers import Stack
from swarm.providers.records import records
from swarm.remote import LocalRunner


class LocalProvider:
    name = "local"
    runs_bootstrap = False
    can_ssh = False

    def _dir(self, stack: Stack, create: bool = False) -> Path:
        return paths.stack_dir("local", stack.name, create=create)

    def _records(self, stack: Stack, write: bool):
        return records(self._dir(stack), write)

    def _node(self, stack: Stack, rec: dict) -> Node:
        return Node(id=rec["id"], role=rec["role"], name="", private_ip="127.0.0.1",
                    public_ip=None, state="running", launched_at=rec["launched_at"],
                    meta={"dir": str(self._dir(stack) / rec["id"]), "lifecycle": "local"})

    def prepare(self, stack: Stack) -> None:
        self._dir(stack, create=True)

    def list_nodes(self, stack: Stack, role: str | None = None) -> list[Node]:
        with self._records(stack, write=False) as recs:
            return [self._node(stack, r) for r in recs if role is None or r["role"] == role]

    def create_nodes(self, stack: Stack, role: str, count: int) -> list[Node]:
        now = time.time()
        new = [{"id": f"{role}-{uuid.uuid4().hex[:8]}", "role": role, "launched_at": now + i * 1e-6}
               for i in range(count)]
        with self._records(stack, write=True) as recs:
            for rec in new:
                (self._dir(stack) / rec["id"]).mkdir(mode=0o700)
            recs.extend(new)
        return [self._node(stack, r) for r in new]

    def wait_ready(self, stack: Stack, nodes: list[Node], timeout: float) -> list[Node]:
        return nodes

    def terminate_nodes(self, stack: Stack, nodes: list[Node]) -> None:
        ids = {n.id for n in nodes}
        rd = stack.config.bootstrap.remote_dir
        for node in nodes:
            node_dir = Path(node.meta["dir"])
            if node_dir.exists():
                # Stop its Locust by pid file before the directory (and the pid file) goes.
                subprocess.run(["sh", "-c", kill_cmd(rd, grace_s=5)], cwd=node_dir,
                               capture_output=True, timeout=30)
                shutil.rmtree(node_dir, ignore_errors=True)
        with self._records(stack, write=True) as recs:
            recs[:] = [r for r in recs if r["id"] not in ids]

    def cleanup(self, stack: Stack) -> None:
        d = self._dir(stack)
        if d.exists() and not self.list_nodes(stack):
            shutil.rmtree(d, ignore_errors=True)

    def runner(self, stack: Stack, node: Node) -> LocalRunner:
        return LocalRunner(Path(node.meta["dir"]), node.name or node.id)
