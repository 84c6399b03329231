"""Every host in parallel, every host's outcome reported (as fabric's Group does)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from swarm.errors import RemoteError, SwarmError
from swarm.models import HostResult, Node

# Hosts worked on at once by one fan-out. The work is mostly waiting on the hosts (a
# bootstrap takes minutes there): a fleet of up to FANOUT_LIMIT is one wave, a larger one
# queues. What costs this machine (the SSH handshakes, what sshd limits with MaxStartups) is
# bounded apart, per sshd (hops.LOGINS_AT_ONCE). Each call has its own pool: a fan-out
# inside another's fn (or beside it, as follow.py's CPU samples) never waits for a thread
# the outer one holds, so nesting cannot deadlock; threads stay below FANOUT_LIMIT per call.
FANOUT_LIMIT = 128


def fan_out(
    nodes: Sequence[Node],
    fn: Callable[[Node], Any],
    *,
    what: str,
    raise_on_error: bool = True,
) -> list[HostResult]:
    """Run fn(node) for every node, FANOUT_LIMIT at a time. Returns one HostResult per node,
    in order; raises RemoteError carrying all of them when any failed (unless
    raise_on_error=False)."""
    if not nodes:
        return []

    def one(node: Node) -> HostResult:
        try:
            return HostResult(node, True, value=fn(node))
        except SwarmError as e:
            return HostResult(node, False, error=str(e))
        except Exception as e:  # a library error not translated yet: keep the host's name on it
            return HostResult(node, False, error=f"{type(e).__name__}: {e}")

    pool = ThreadPoolExecutor(
        max_workers=min(FANOUT_LIMIT, len(nodes)), thread_name_prefix=f"fan-out {what}"
    )
    try:
        results = list(pool.map(one, nodes))
    except BaseException:
        # Ctrl-C: never wait for hosts that may take minutes (a bootstrap); the CLI ends the
        # process without joining these threads.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    failed = [r for r in results if not r.ok]
    if failed and raise_on_error:
        detail = "; ".join(f"{r.node.name}: {r.error}" for r in failed[:5])
        more = f" (+{len(failed) - 5} more)" if len(failed) > 5 else ""
        raise RemoteError(
            f"{what} failed on {len(failed)} of {len(results)} hosts: {detail}{more}", results
        )
    return results
