"""The Provider: where a stack's nodes are, and how to create, remove and reach them.

Providers are dumb (as Ray's NodeProvider): they never reconcile counts, print, or retry in
loops of their own (the pipeline does), they know nothing of Locust, and they translate their
library's errors into swarm errors at the edge. Optional capabilities have documented defaults
here, so callers never probe with getattr.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from swarm.config import Config
from swarm.errors import ProviderError
from swarm.models import Node, Role
from swarm.remote.base import Runner

if TYPE_CHECKING:
    from swarm.providers.ec2.pricing import PriceBook


def _nobody(msg: str) -> None:
    pass


@dataclass(frozen=True)
class Stack:
    name: str
    provider: str
    config: Config

    @classmethod
    def from_config(cls, config: Config) -> Stack:
        return cls(config.stack.name, config.stack.provider, config)


@dataclass(frozen=True)
class Elsewhere:
    """The stack in a region other than the configured one (`Provider.other_regions`)."""

    region: str
    instances: int | None  # live instances there; None: not known (see `error`)
    local_state: bool  # this machine keeps the stack's key / known_hosts for that region
    error: str = ""  # why that region could not be asked

    def to_json(self) -> dict[str, object]:
        return {
            "region": self.region,
            "instances": self.instances,
            "local_state": self.local_state,
            "error": self.error or None,
        }


@dataclass(frozen=True)
class MasterPorts:
    """Where the stack's master listens: workers connect to `port`, its web UI and API are on
    `web` (always its loopback); `bind`: the address workers reach it on (None: every
    interface, as workers on other machines need)."""

    port: int
    web: int
    bind: str | None = None


class Provider(abc.ABC):
    name: str = ""
    runs_bootstrap: bool = True  # False for local: bootstrap.sh installs system packages
    can_ssh: bool = True  # `swarm ssh` / tunnels make sense
    # The machine outlives terminate_nodes (hosts; local's directories): the pipeline stops
    # what swarm runs there and removes the remote dir first. EC2 terminates the machine.
    keeps_machines: bool = False
    # Nodes power themselves off at the stack's expiry (Node.expires_at; EC2's TTL): the
    # pipeline schedules and moves that power-off over SSH, set_expiry records it.
    expires: bool = False
    # The master relays bootstrap/ and locustfiles/ to the workers over the nodes' own
    # network (swarm/pipeline/shipping.py). False for local: every node is this machine.
    relays_trees: bool = True

    def __init__(self, config: Config):
        self.config = config
        # Human messages for the pipeline to pass on (providers never print): `notices` are
        # collected and passed on after a step; `progress` is called during a long wait (the
        # session points it at its reporter; by default nobody listens).
        self.notices: list[str] = []
        self.progress: Callable[[str], None] = _nobody

    @property
    def region(self) -> str | None:
        """The cloud region nodes live in; None where there is none."""
        return None

    def other_regions(self, stack: Stack, everywhere: bool) -> list[Elsewhere]:
        """Regions other than this provider's where the stack has nodes or local state:
        where it is cheap to know, or (`everywhere`) every region. Default: none."""
        return []

    def in_region(self, region: str) -> Provider:
        """This provider for another region (its `config` says so). Default: itself."""
        return self

    def master_ports(self, stack: Stack) -> MasterPorts:
        """The stack's master ports. Default: [locust] master_port and web_port (each stack
        has machines of its own)."""
        return MasterPorts(self.config.locust.master_port, self.config.locust.web_port)

    def check_launch(self, stack: Stack, role: Role, count: int) -> None:
        """Refuse (UsageError / ProviderError) a launch that cannot work, before prepare()
        creates anything. Default: nothing to check."""

    def prepare(self, stack: Stack) -> None:
        """Create per-stack shared resources (security group, key pair); idempotent.
        Default: none."""

    @abc.abstractmethod
    def list_nodes(self, stack: Stack, role: Role | None = None) -> list[Node]:
        """Live nodes of this stack (not terminated), optionally of one role."""

    @abc.abstractmethod
    def create_nodes(self, stack: Stack, role: Role, count: int) -> list[Node]:
        """Launch `count` nodes in one call, tagged/recorded at creation."""

    def wait_ready(self, stack: Stack, nodes: list[Node], timeout: float) -> list[Node]:
        """Block (bounded) until the provider says the nodes run; return refreshed records.
        Default: they run as soon as they are created."""
        return nodes

    @abc.abstractmethod
    def terminate_nodes(self, stack: Stack, nodes: list[Node]) -> None:
        """Remove these nodes (and wait, bounded, until they are gone)."""

    def cleanup(self, stack: Stack) -> None:
        """Remove per-stack shared resources once no node is left; idempotent. Default: none."""

    @abc.abstractmethod
    def runner(self, stack: Stack, node: Node) -> Runner:
        """A Runner that executes commands on `node`."""

    def set_expiry(self, stack: Stack, nodes: list[Node], expires_at: float) -> None:
        """Record the nodes' new expiry (unix seconds) where the provider keeps its state.
        Only called where `expires`; default: nowhere to record it."""
        raise ProviderError(f"the {self.name} provider's nodes have no expiry")

    def price_book(self) -> PriceBook | None:
        """Prices of this provider's nodes; None where nodes cost nothing swarm can know."""
        return None
