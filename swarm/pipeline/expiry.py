"""One expiry for the stack: every node powers off at it (EC2's TTL), `swarm extend` moves it,
bootstrap makes sure it is scheduled, and nothing starts that would outlive it.

The stack's expiry is its master's (`models.stack_expiry`): the first node of a stack gets
`[ec2] ttl` from its launch, later ones inherit it (the provider tags them so), and every node
schedules its own power-off for that time (user data at boot; over SSH here).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

from swarm.config.schema import MIN_TTL_S, parse_ttl
from swarm.errors import RemoteError, UsageError
from swarm.models import HostResult, Node, stack_expiry
from swarm.pipeline.session import Session
from swarm.remote import poweroff
from swarm.remote.base import Runner
from swarm.remote.fanout import fan_out

# What a run or a new node needs beyond its own time: systemd refuses new logins 5 minutes
# before the shutdown (fetching results, bootstrapping), plus a couple of minutes to start and
# fetch.
MARGIN_S = 7 * 60
SSH_TIMEOUT = 60
UNSCHEDULED = "shutdown -h and its sleep; poweroff fallback both failed, or no root or sudo -n"


def left_text(seconds: float) -> str:
    """1h12m, 45m, 3d2h (to the nearest minute)."""
    m = max(0, round(seconds / 60))
    d, h, m = m // 1440, m % 1440 // 60, m % 60
    if d:
        return f"{d}d{h}h" if h else f"{d}d"
    return f"{h}h{m:02d}m" if h else f"{m}m"


def at_text(ts: float, with_date: bool = False) -> str:
    d = datetime.fromtimestamp(ts, timezone.utc)
    return d.strftime("%Y-%m-%d %H:%M UTC" if with_date else "%H:%M UTC")


def duration_text(seconds: int) -> str:
    """A duration as `swarm extend` takes it: 2h10m, 40m."""
    h, m = divmod(int(seconds) // 60, 60)
    return f"{h}h{m}m" if h and m else f"{h}h" if h else f"{m}m"


def parse_extension(text: str) -> int:
    """`swarm extend DURATION` -> seconds, as `[ec2] ttl` is checked (10m to 7d)."""
    try:
        return parse_ttl(text)
    except ValueError as e:
        raise UsageError(f"DURATION {e}") from None


def extend_hint(needed_s: float, margin_s: float = MARGIN_S) -> str:
    """The `swarm extend` that gives `needed_s` plus the margin, rounded up to 10 minutes."""
    step = 10 * 60
    want = max(MIN_TTL_S, -(-int(needed_s + margin_s) // step) * step)
    return f"swarm extend {duration_text(want)}"


def check_room(
    sess: Session, nodes: list[Node], needed_s: float, what: str, margin_s: float = MARGIN_S
) -> None:
    """Refuse (before anything starts) `what` if it needs longer than the stack has left."""
    expires = stack_expiry(nodes)
    if expires is None:
        return
    left = expires - time.time()
    if left >= needed_s + margin_s:
        return
    when = f"in {left_text(left)}" if left > 0 else "already"
    raise UsageError(
        f"{what} but stack {sess.stack.name} powers off {when} (at {at_text(expires)}): "
        f"run `{extend_hint(needed_s, margin_s)}` first"
    )


def ensure_scheduled(runner: Runner, node: Node) -> str | None:
    """After a bootstrap: is the node's power-off scheduled (by its user data)? If not,
    schedule it for the node's expiry. -> a warning when nothing will power it off."""
    if node.expires_at is None:
        return None
    minutes = poweroff.minutes_until(node.expires_at, time.time())
    probe = poweroff.schedule_probe(minutes, only_if_missing=True)
    try:
        got = probe.parse(runner.run(probe.command, timeout=SSH_TIMEOUT, check=False).stdout)
    except RemoteError as e:
        got, why = poweroff.Scheduled(poweroff.PowerOff.NONE), f" ({e})"
    else:
        why = "" if got.ok else f" ({UNSCHEDULED})"
    if got.ok:
        return None
    return (
        f"node {node.name}: no shutdown scheduled{why}: it will not power off at the TTL; "
        "`swarm down` when done"
    )


@dataclass
class Extended:
    expires_at: float  # what was asked: now + DURATION
    was: float | None  # the stack's expiry before
    now: float | None  # the stack's expiry after (the master's; unchanged if it was not reached)
    results: list[HostResult] = field(default_factory=list)  # value: poweroff.Scheduled

    @property
    def failed(self) -> list[HostResult]:
        return [r for r in self.results if not r.ok]


def extend(sess: Session, seconds: int) -> Extended:
    """Move every node's power-off to `seconds` from now (over SSH), then its tag; a node that
    cannot be reached keeps both (and is reported)."""
    p = sess.provider
    if not p.expires:
        raise UsageError(
            f"the {p.name} provider's nodes have no expiry (only ec2 instances power off "
            "at a TTL): nothing to extend"
        )
    nodes = sess.nodes()
    if not nodes:
        raise UsageError(f"stack {sess.stack.name!r} has no nodes: nothing to extend")
    new = time.time() + seconds

    def one(node: Node) -> poweroff.Scheduled:
        probe = poweroff.schedule_probe(poweroff.minutes_until(new, time.time()))
        r = p.runner(sess.stack, node)
        try:
            got = probe.parse(r.run(probe.command, timeout=SSH_TIMEOUT, check=False).stdout)
        finally:
            r.close()
        if not got.ok:
            raise RemoteError(f"no shutdown could be scheduled ({UNSCHEDULED})")
        return got

    results = fan_out(nodes, one, what="extend", raise_on_error=False)
    reached = [r.node for r in results if r.ok]
    if reached:
        p.set_expiry(sess.stack, reached, new)
    ok = {n.id for n in reached}
    after = [replace(n, expires_at=new) if n.id in ok else n for n in nodes]
    return Extended(new, stack_expiry(nodes), stack_expiry(after), results)
