"""Cost lines for a person: the estimate before a launch, what the nodes cost so far."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from swarm.config.schema import Spot
from swarm.models import Lifecycle, Node, Role
from swarm.pipeline.session import Session
from swarm.providers.ec2.pricing import (
    PUBLIC_IPV4_USD_PER_HOUR,
    PriceBook,
    estimate_hourly,
    format_rate,
    format_usd,
    spend,
    time_to_ttl,
)


@dataclass(frozen=True)
class Spent:
    usd: float | None  # None: some node's price is unknown
    ttl_s: float | None  # seconds to the first node's TTL
    text: str  # 'spent so far: $0.12; TTL in 3h58m'

    def to_json(self) -> dict[str, object]:
        return {
            "spent_usd": None if self.usd is None else round(self.usd, 4),
            "ttl_s": self.ttl_s,
            "spent": format_usd(self.usd),
            "text": self.text,
        }


def estimate(sess: Session, role: Role, count: int, nodes: list[Node]) -> str | None:
    """'estimated cost: $0.54/h for the stack (1 master + 5 workers, on-demand; 6 public IPv4
    address(es) at $0.005/h each included)'; None where the provider has no prices. `nodes`:
    the stack as this command has just listed it, each priced as it runs; `count` more of
    `role` priced as [ec2] spot asks."""
    book = sess.provider.price_book()
    if book is None:
        return None
    cfg = sess.stack.config.ec2
    planned = Lifecycle.ON_DEMAND if cfg.spot is Spot.OFF else Lifecycle.SPOT
    types = {Role.MASTER: cfg.master_type, Role.WORKER: cfg.worker_type}
    counts: Counter[tuple[str, str]] = Counter(
        (n.instance_type or types[n.role], str(n.lifecycle)) for n in nodes
    )
    if count > 0:
        counts[types[role], str(planned)] += count
    masters = sum(n.role == Role.MASTER for n in nodes) + (count if role == Role.MASTER else 0)
    workers = sum(n.role == Role.WORKER for n in nodes) + (count if role == Role.WORKER else 0)
    public_ips = masters + workers if cfg.public_ip_wanted else 0
    items = [(t, lc, k) for (t, lc), k in counts.items()]
    total, prices = estimate_hourly(book, items, public_ips)
    why = "; ".join(sorted({p.source for p in prices if p.usd_per_hour is None}))
    by_market: Counter[str] = Counter()
    for (_, lc), k in counts.items():
        by_market[lc] += k
    market = (
        " + ".join(f"{k} {lc}" for lc, k in sorted(by_market.items()))
        if len(by_market) > 1
        else next(iter(by_market), str(planned))
    )
    ipv4 = (
        f"; {public_ips} public IPv4 address(es) at {format_rate(PUBLIC_IPV4_USD_PER_HOUR)} "
        "each included"
        if public_ips
        else ""
    )
    return (
        f"estimated cost: {format_rate(total)} for the stack ({masters} master + "
        f"{workers} workers, {market}{ipv4})" + (f" ({why})" if why else "")
    )


def fell_back(sess: Session, created: list[Node]) -> bool:
    """[ec2] spot asked for spot and some of `created` were launched on-demand instead."""
    return sess.stack.config.ec2.spot is not Spot.OFF and any(
        n.lifecycle == Lifecycle.ON_DEMAND for n in created
    )


def spent_so_far(sess: Session, nodes: list[Node], book: PriceBook | None = None) -> Spent | None:
    """What the nodes cost so far (running time × current price) and the time to the TTL.
    `book`: one per command, so `status --watch` asks for prices once."""
    book = book or sess.provider.price_book()
    if book is None or not nodes:
        return None
    total, _ = spend(book, nodes)
    ttl = time_to_ttl(nodes)
    ttl_text = "unknown" if ttl is None else f"{int(ttl // 3600)}h{int(ttl % 3600 // 60):02d}m"
    return Spent(total, ttl, f"spent so far: {format_usd(total)}; TTL in {ttl_text}")
