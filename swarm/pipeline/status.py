"""`swarm status`: the stack's nodes, what they cost, and its Locust as the master sees it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from swarm.errors import SwarmError
from swarm.locust.live import LiveView, master_stats_probe, summarize
from swarm.locust.shell import cpu_probe
from swarm.models import Node, Role, stack_expiry
from swarm.pipeline.cost import Spent, spent_so_far
from swarm.pipeline.regions import session_in
from swarm.pipeline.session import Session
from swarm.providers.base import Elsewhere, MasterPorts
from swarm.providers.ec2.pricing import PriceBook
from swarm.remote.fanout import fan_out

CPU_WINDOW_S = 0.5  # between a status's two CPU samples of each node


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
    cpu: dict[str, float] = field(default_factory=dict)  # node -> CPU % while Locust runs


def live_status(sess: Session, nodes: list[Node]) -> LiveView | None:
    """The stack's Locust as its master sees it; None when there is no master. `nodes`: the
    stack as this command has just listed it (on EC2 a listing is an API call)."""
    masters = [n for n in nodes if n.role == Role.MASTER]
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


def node_cpu(sess: Session, nodes: list[Node], processes: dict[str, int]) -> dict[str, float]:
    """Each node's Locust CPU % over CPU_WINDOW_S, sampled on the node itself and named by
    node (Locust's own figure names workers by an id, unmappable where hostnames repeat)."""
    probe = cpu_probe(sess.remote_dir)

    def two_samples(node: Node) -> float | None:
        r = sess.provider.runner(sess.stack, node)
        try:
            first = probe.parse(r.run(probe.command, timeout=15, check=False).stdout)
            time.sleep(CPU_WINDOW_S)
            second = probe.parse(r.run(probe.command, timeout=15, check=False).stdout)
        finally:
            r.close()
        if first is None or second is None:
            return None
        return second.percent_since(first, processes.get(node.name, 1))

    return {
        res.node.name: round(res.value, 1)
        for res in fan_out(nodes, two_samples, what="cpu sample", raise_on_error=False)
        if res.ok and res.value is not None
    }


def snapshot(
    sess: Session,
    book: PriceBook | None,
    elsewhere: list[Elsewhere] | None = None,
    everywhere: bool = False,
) -> Status:
    """The stack in its region; `elsewhere`: where else it was found (once per command);
    `everywhere`: each of those regions' nodes too (listed, priced, never reached over SSH)."""
    nodes = sess.nodes()
    live = live_status(sess, nodes)
    cpu = node_cpu(sess, nodes, live.processes) if live and live.running else {}
    found = elsewhere or []
    others = [_nodes_in(sess, e.region) for e in found if e.instances] if everywhere else []
    return Status(
        sess.stack.name,
        sess.stack.provider,
        nodes,
        live,
        spent_so_far(sess, nodes, book),
        stack_expiry(nodes),
        sess.provider.region,
        found,
        others,
        sess.ports if live is not None else None,
        cpu,
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
