"""`swarm status`: the stack's nodes, what they cost, and its Locust as the master sees it."""

from __future__ import annotations

from dataclasses import dataclass

from swarm.errors import SwarmError
from swarm.locust.live import LiveView, master_stats_probe, summarize
from swarm.models import Node, Role, stack_expiry
from swarm.pipeline.cost import Spent, spent_so_far
from swarm.pipeline.session import Session
from swarm.providers.ec2.pricing import PriceBook


@dataclass(frozen=True)
class Status:
    stack: str
    provider: str
    nodes: list[Node]
    locust: LiveView | None  # None when the stack has no nodes (or no master)
    cost: Spent | None
    expires_at: float | None = None  # when the stack powers off (its master's expiry)


def live_status(sess: Session) -> LiveView | None:
    """The stack's Locust as its master sees it; None when there is no master."""
    masters = sess.nodes(Role.MASTER)
    if not masters:
        return None
    runner = sess.provider.runner(sess.stack, masters[0])
    try:
        probe = master_stats_probe(sess.remote_dir, sess.stack.config.locust.web_port)
        return summarize(probe.parse(runner.run(probe.command, timeout=20, check=False).stdout))
    except SwarmError as e:
        return LiveView.unreachable(str(e))
    finally:
        runner.close()


def snapshot(sess: Session, book: PriceBook | None) -> Status:
    nodes = sess.nodes()
    return Status(
        sess.stack.name,
        sess.stack.provider,
        nodes,
        live_status(sess) if nodes else None,
        spent_so_far(sess, nodes, book),
        stack_expiry(nodes),
    )
