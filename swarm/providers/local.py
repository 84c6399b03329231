"""The `local` provider: nodes are directories on this machine, Locust runs as processes.

The stack's nodes are recorded in <state>/local/<stack>/nodes.json (a flock guards updates);
each node has its own directory, which plays the part of a host's home.

Stacks share this machine, so they must not share ports: a worker of one stack would join
another's master. Unless [locust] names ports of its own, each stack's master gets free ports
when it is created (kept in its record) and binds to the loopback only.
"""

from __future__ import annotations

import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import Any

from swarm import paths
from swarm.config.schema import LocustSection
from swarm.models import Lifecycle, Node, NodeState, Role
from swarm.providers.base import MasterPorts, Provider, Stack
from swarm.providers.records import records
from swarm.remote.local import LocalRunner


class LocalProvider(Provider):
    name = "local"
    runs_bootstrap = False
    can_ssh = False
    keeps_machines = True
    relays_trees = False

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

    def master_ports(self, stack: Stack) -> MasterPorts:
        with records(self._dir(stack), write=False) as recs:
            got = next(
                (r["ports"] for r in recs if r["role"] == Role.MASTER and "ports" in r), None
            )
        if got is None:
            port, web = self.config.locust.master_port, self.config.locust.web_port
        else:
            port, web = int(got["master"]), int(got["web"])
        return MasterPorts(port, web, bind="127.0.0.1")

    def _ports_for_new_master(self) -> dict[str, int]:
        cfg, default = self.config.locust, LocustSection()
        if (cfg.master_port, cfg.web_port) != (default.master_port, default.web_port):
            return {"master": cfg.master_port, "web": cfg.web_port}  # the user's choice
        socks = [socket.socket() for _ in range(2)]
        try:
            for s in socks:
                s.bind(("127.0.0.1", 0))
            master, web = (int(s.getsockname()[1]) for s in socks)
        finally:
            for s in socks:
                s.close()
        return {"master": master, "web": web}

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
        if role == Role.MASTER:
            for rec in new:
                rec["ports"] = self._ports_for_new_master()
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
