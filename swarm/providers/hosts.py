"""The `hosts` provider: existing SSH machines named in [hosts].

`up` enrols configured hosts into the stack (first come, in the order listed) and core
bootstraps them; `down` stops Locust and removes the remote dir; nothing is powered off.
Which hosts are enrolled is recorded in <state>/hosts/<stack>/nodes.json.
"""
from __future__ import annotations

import shlex
import time
from pathlib import Path

from swarm import paths
from swarm.config import parse_host
from swarm.errors import UsageError
from swarm.locust import kill_cmd, warm_stop_cmd
from swarm.models import MASTER, Node
from swarm.providers import Stack
from swarm.providers.records import records
from swarm.remote import fan_out


class HostsProvider:
    name = "hosts"
    runs_bootstrap = True
    can_ssh = True

    def __init__(self, config):
        self.config = config
        self.notices: list[str] = []

    def _configured(self, role: str) -> list[str]:
        h = self.config.hosts
        return [h.master] if role == MASTER else list(h.workers)

    def _dir(self, stack: Stack, create: bool = False) -> Path:
        return paths.stack_dir("hosts", stack.name, create=create)

    def _records(self, stack: Stack, write: bool):
        return records(self._dir(stack), write)

    def _node(self, rec: dict) -> Node:
        user, host, port = parse_host(rec["id"])
        return Node(id=rec["id"], role=rec["role"], name="", private_ip=host, public_ip=None,
                    state="enrolled", launched_at=rec["at"],
                    meta={"user": user, "port": port, "lifecycle": "existing", "connect_ip": host})

    def prepare(self, stack: Stack) -> None:
        self._dir(stack, create=True)

    def list_nodes(self, stack: Stack, role: str | None = None) -> list[Node]:
        with self._records(stack, write=False) as recs:
            return [self._node(r) for r in recs if role is None or r["role"] == role]

    def create_nodes(self, stack: Stack, role: str, count: int) -> list[Node]:
        with self._records(stack, write=True) as recs:
            taken = {r["id"] for r in recs}
            free = [h for h in self._configured(role) if h not in taken]
            if len(free) < count:
                listed = len(self._configured(role))
                raise UsageError(f"[hosts] lists {listed} {role} host(s) and {len(taken)} are in use: "
                                 f"cannot add {count} more; add hosts to [hosts] in swarm.toml")
            now = time.time()
            new = [{"id": h, "role": role, "at": now + i * 1e-6} for i, h in enumerate(free[:count])]
            recs.extend(new)
        return [self._node(r) for r in new]

    def wait_ready(self, stack: Stack, nodes: list[Node], timeout: float) -> list[Node]:
        return nodes     # core waits for SSH itself, per host

    def terminate_nodes(self, stack: Stack, nodes: list[Node]) -> None:
        rd = self.config.bootstrap.remote_dir   # the builders quote it themselves

        def clean(node: Node) -> None:
            r = self.runner(stack, node)
            try:
                r.run(f"{kill_cmd(rd)} >/dev/null; {warm_stop_cmd(rd)}; rm -rf {shlex.quote(rd)}",
                      timeout=60)
            finally:
                r.close()

        for res in fan_out(nodes, clean, what="clean up", raise_on_error=False):
            if not res.ok:
                self.notices.append(f"{res.node.id}: could not stop Locust / remove {rd}: "
                                    f"{res.error}; it is removed from the stack anyway")
        ids = {n.id for n in nodes}
        with self._records(stack, write=True) as recs:
            recs[:] = [r for r in recs if r["id"] not in ids]

    def cleanup(self, stack: Stack) -> None:
        if not self.list_nodes(stack):
            d = self._dir(stack)
            for name in ("nodes.json", ".lock"):
                (d / name).unlink(missing_ok=True)

    def runner(self, stack: Stack, node: Node):
        from swarm.ssh import SSHRunner
        key = self.config.resolve(self.config.hosts.ssh_key) if self.config.hosts.ssh_key else None
        return SSHRunner(host=node.meta["connect_ip"], port=node.meta["port"], user=node.meta["user"],
                         key_file=key, known_hosts=self._dir(stack, create=True) / "known_hosts",
                         label=node.name or node.id)
