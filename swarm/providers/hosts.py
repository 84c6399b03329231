"""The `hosts` provider: existing SSH machines named in [hosts].

`up` enrols configured hosts into the stack (first come, in the order listed) and the pipeline
bootstraps them; removing one only forgets it (the pipeline first stops Locust there and
removes the remote dir); nothing is powered off. Which hosts are enrolled is recorded in
<state>/hosts/<stack>/nodes.json. An entry is read as OpenSSH reads a host on its command line:
an alias of the ssh_config, its HostName, User, Port, IdentityFile and ProxyJump or
ProxyCommand (remote/sshconfig.py).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from swarm import paths
from swarm.config import Config
from swarm.errors import UsageError
from swarm.models import Lifecycle, Node, NodeState, Role, SshAddress
from swarm.providers.base import Provider, Stack
from swarm.providers.records import records
from swarm.remote.base import Runner
from swarm.remote.sshconfig import Resolved, SshConfig


class HostsProvider(Provider):
    name = "hosts"
    keeps_machines = True

    def __init__(self, config: Config):
        super().__init__(config)
        self._ssh_config: SshConfig | None = None
        self._resolved: dict[str, Resolved] = {}

    def resolve(self, entry: str) -> Resolved:
        """Where a [hosts] entry is, and the way to it, per the ssh_config (read once per
        entry: every listing and every runner asks)."""
        if entry not in self._resolved:
            if self._ssh_config is None:
                path = self.config.hosts.ssh_config
                self._ssh_config = SshConfig(self.config.resolve(path) if path else None)
            self._resolved[entry] = self._ssh_config.resolve(entry)
        return self._resolved[entry]

    def check_launch(self, stack: Stack, role: Role, count: int) -> None:
        """Every entry has a user, its own or its ssh_config's: all of them, whatever is
        launched now, so a bad line in [hosts] is found before anything starts."""
        for r in (Role.MASTER, Role.WORKER):
            where = "[hosts] master" if r == Role.MASTER else "[hosts] workers"
            for entry in self._configured(r):
                self.resolve(entry).require_user(where, entry)

    def _configured(self, role: Role) -> list[str]:
        h = self.config.hosts
        if role == Role.MASTER:
            return [h.master] if h.master else []
        return list(h.workers)

    def _dir(self, stack: Stack, create: bool = False) -> Path:
        return paths.stack_dir("hosts", stack.name, create=create)

    def _node(self, rec: dict[str, Any]) -> Node:
        # Its HostName is the address workers reach the master at: behind a jump host, an
        # address of the network the hosts share.
        hop = self.resolve(rec["id"]).hop
        return Node(
            id=rec["id"],
            role=Role(rec["role"]),
            private_ip=hop.host,
            state=NodeState.ENROLLED,
            launched_at=rec["at"],
            lifecycle=Lifecycle.EXISTING,
            ssh=SshAddress(hop.host, hop.port, hop.user),
        )

    def prepare(self, stack: Stack) -> None:
        self._dir(stack, create=True)

    def list_nodes(self, stack: Stack, role: Role | None = None) -> list[Node]:
        with records(self._dir(stack), write=False) as recs:
            return [self._node(r) for r in recs if role is None or r["role"] == role]

    def create_nodes(self, stack: Stack, role: Role, count: int) -> list[Node]:
        with records(self._dir(stack), write=True) as recs:
            taken = {r["id"] for r in recs}
            free = [h for h in self._configured(role) if h not in taken]
            if len(free) < count:
                listed = len(self._configured(role))
                raise UsageError(
                    f"[hosts] lists {listed} {role} host(s) and {len(taken)} are in use: "
                    f"cannot add {count} more; add hosts to [hosts] in swarm.toml"
                )
            now = time.time()
            new = [
                {"id": h, "role": str(role), "at": now + i * 1e-6}
                for i, h in enumerate(free[:count])
            ]
            recs.extend(new)
        return [self._node(r) for r in new]

    def terminate_nodes(self, stack: Stack, nodes: list[Node]) -> None:
        ids = {n.id for n in nodes}
        with records(self._dir(stack), write=True) as recs:
            recs[:] = [r for r in recs if r["id"] not in ids]

    def cleanup(self, stack: Stack) -> None:
        if not self.list_nodes(stack):
            d = self._dir(stack)
            for name in ("nodes.json", ".lock"):
                (d / name).unlink(missing_ok=True)

    def runner(self, stack: Stack, node: Node) -> Runner:
        from swarm.remote.ssh import SSHRunner  # paramiko: only when a host is reached

        found = self.resolve(node.id)
        key = self.config.resolve(self.config.hosts.ssh_key) if self.config.hosts.ssh_key else None
        return SSHRunner(
            host=found.hop.host,
            port=found.hop.port,
            user=found.hop.user,
            key_file=key,
            key_files=found.hop.key_files,
            route=found.route,
            known_hosts=self._dir(stack, create=True) / "known_hosts",
            label=node.name or node.id,
        )
