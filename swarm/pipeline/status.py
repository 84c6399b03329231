"""`swarm status`: the stack's nodes, what they cost, and its Locust as the master sees it."""

from __future__ import annotations

from dataclasses import dataclass, field

from swarm.errors import SwarmError
from swarm.locust.live import LiveView, master_stats_probe, summarize
from swarm.models import Node, Role, stack_expiry
from swarm.pipeline.cost import Spent, spent_so_far
from swarm.pipeline.regions import session_in
from swarm.pipeline.session import Session
from swarm.providers.base import Elsewhere, MasterPorts
from swarm.providers.ec2.pricing import PriceBook


@dataclass(frozen=True)
class Status:
    stack: str
    provider: str
    nodes: list[Node]
    locust: LiveView | None  # None when the stack has no nodes (or no master)
    cost: Spent | None
    expires_at: float | None = None  # when the stack powers off (its master's expiry)
    region: str | None = None
    elsewhere: list[Elsewhere] = field(default_factory=list)  # other regions it was found in
    others: list[Status] = field(default_factory=list)  # --all-regions: each one with nodes
    ports: MasterPorts | None = None  # where its master listens (None: no master)


def live_status(sess: Session) -> LiveView | None:
    """The stack's Locust as its master sees it; None when there is no master."""
    masters = sess.nodes(Role.MASTER)
    if not masters:
        return None
    runner = sess.provider.runner(sess.stack, masters[0])
    try:
        probe = master_stats_probe(sess.remote_dir, sess.ports.web)
        return summarize(probe.parse(runner.run(probe.command, timeout=20, check=False).stdout))
    except SwarmError as e:
        return LiveView.unreachable(str(e))
    finally:
        runner.close()


def snapshot(
    sess: Session,
    book: PriceBook | None,
    elsewhere: list[Elsewhere] | None = None,
    everywhere: bool = False,
) -> Status:
    """The stack in its region; `elsewhere`: where else it was found (once per command);
    `everywhere`: each of those regions' nodes too (listed, priced, never reached over SSH)."""
    nodes = sess.nodes()
    found = elsewhere or []
    others = [_nodes_in(sess, e.region) for e in found if e.instances] if everywhere else []
    return Status(
        sess.stack.name,
        sess.stack.provider,
        nodes,
        live_status(sess) if nodes else None,
        spent_so_far(sess, nodes, book),
        stack_expiry(nodes),
        sess.provider.region,
        found,
        others,
        sess.ports if any(n.role == Role.MASTER for n in nodes) else None,
    )


def _nodes_in(sess: Session, region: str) -> Status:
    there = session_in(sess, region)
    nodes = there.nodes()
    return Status(
        sess.stack.name,
        sess.stack.provider,
        nodes,
        None,
        spent_so_far(there, nodes),
        stack_expiry(nodes),
        region,
    )
