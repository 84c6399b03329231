"""The Provider protocol: where nodes are, and how to create, remove and reach them.

Providers are dumb: they never reconcile counts, print or retry in loops of their own
(core does); they translate their library's errors into swarm errors at the edge.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from swarm.models import Node

if TYPE_CHECKING:
    from swarm.config import Config
    from swarm.remote import Runner


@dataclass(frozen=True)
class Stack:
    name: str
    provider: str
    config: "Config"

    @classmethod
    def from_config(cls, config: "Config") -> "Stack":
        return cls(config.stack.name, config.stack.provider, config)


class Provider(Protocol):
    name: str
    runs_bootstrap: bool      # False for local: bootstrap.sh installs system packages
    can_ssh: bool             # `swarm ssh` / tunnels make sense

    def prepare(self, stack: Stack) -> None:
        """Create per-stack shared resources (security group, key pair); idempotent."""

    def list_nodes(self, stack: Stack, role: str | None = None) -> list[Node]:
        """Live nodes of this stack (not terminated), optionally of one role."""

    def create_nodes(self, stack: Stack, role: str, count: int) -> list[Node]:
        """Launch `count` nodes in one call, tagged/recorded at creation."""

    def wait_ready(self, stack: Stack, nodes: list[Node], timeout: float) -> list[Node]:
        """Block (bounded) until the provider says the nodes run; return refreshed records."""

    def terminate_nodes(self, stack: Stack, nodes: list[Node]) -> None:
        """Remove these nodes (and wait, bounded, until they are gone)."""

    def cleanup(self, stack: Stack) -> None:
        """Remove per-stack shared resources once no node is left; idempotent."""

    def runner(self, stack: Stack, node: Node) -> "Runner":
        """A Runner that executes commands on `node`."""


def get_provider(stack: Stack) -> Provider:
    name = stack.provider
    if name == "local":
        from swarm.providers.local import LocalProvider
        return LocalProvider()
    if name == "ec2":
        from swarm.providers.ec2 import Ec2Provider
        return Ec2Provider(stack.config)
    if name == "hosts":
        from swarm.providers.hosts import HostsProvider
        return HostsProvider(stack.config)
    raise ValueError(f"unknown provider {name!r}")  # config already rejects this
