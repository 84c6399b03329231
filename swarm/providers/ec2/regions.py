"""The stack outside the configured region: local state dirs (free) and instances (one
DescribeInstances per region, in parallel, bounded).

A stack lives in one region, but nothing stops a user from changing [ec2] region (or
AWS_DEFAULT_REGION) while it runs: `status` and `down` would then say "no nodes" while
instances bill elsewhere. The local state dir `<state>/ec2/<region>/<stack>/` of every
region the stack was brought up in from this machine costs nothing to read; asking every
region's API (~30 calls) is done only when it is worth it (the caller decides).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

from swarm import paths
from swarm.providers.base import Elsewhere
from swarm.providers.ec2 import tags
from swarm.providers.ec2.errors import error_code

SCAN_TIMEOUT_S = 10.0  # every region's answer, all of them together
# A region the account has not opted in to answers these: not a place the stack can be.
NOT_ENABLED = frozenset(
    {"AuthFailure", "OptInRequired", "UnrecognizedClientException", "InvalidClientTokenId"}
)


def local_regions(stack: str, here: str) -> list[str]:
    """Regions other than `here` where this machine keeps state of the stack (its key,
    known_hosts): `down` removes the dir, so one left means the stack was not brought
    down there."""
    root = paths.state_dir() / "ec2"
    if not root.is_dir():
        return []
    found = []
    for region_dir in sorted(root.iterdir()):
        d = region_dir / stack
        if region_dir.name != here and d.is_dir() and any(d.iterdir()):
            found.append(region_dir.name)
    return found


def every_region(session: Any, here: str) -> list[str]:
    """EC2's regions of `here`'s partition as botocore knows them (no API call), but `here`."""
    try:
        partition = session.get_partition_for_region(here)
    except Exception:  # noqa: BLE001 - an older botocore: the commercial partition
        partition = "aws"
    return sorted(set(session.get_available_regions("ec2", partition_name=partition)) - {here})


def count_instances(
    session: Any, regions: list[str], stack: str, states: list[str]
) -> dict[str, int | str]:
    """region -> how many live instances carry the stack's tag, or why that region could not
    be asked (regions not enabled for the account are left out). One call per region, in
    parallel; each bounded by short timeouts and 2 attempts, all of them by SCAN_TIMEOUT_S."""
    if not regions:
        return {}
    from botocore.config import Config as BotoConfig

    conf = BotoConfig(
        retries={"mode": "standard", "total_max_attempts": 2}, connect_timeout=3, read_timeout=5
    )
    # boto3 sessions are not thread-safe, its clients are: make them here, use them there.
    clients = {r: session.client("ec2", region_name=r, config=conf) for r in regions}
    filters = [*tags.stack_filters(stack), {"Name": "instance-state-name", "Values": states}]

    def count(region: str) -> int:
        pages = clients[region].get_paginator("describe_instances").paginate(Filters=filters)
        return sum(len(r["Instances"]) for page in pages for r in page["Reservations"])

    pool = ThreadPoolExecutor(max_workers=min(16, len(regions)), thread_name_prefix="regions")
    try:
        futures = {pool.submit(count, r): r for r in regions}
        wait(futures, timeout=SCAN_TIMEOUT_S)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    out: dict[str, int | str] = {}
    for fut, region in futures.items():
        # Not started when the wait ended: cancelled by the shutdown, done but no answer.
        if fut.cancelled() or not fut.done():
            out[region] = f"no answer in {SCAN_TIMEOUT_S:g}s"
        elif fut.exception() is not None:
            exc = fut.exception()
            assert exc is not None
            code = error_code(exc)
            if code not in NOT_ENABLED:
                out[region] = code or type(exc).__name__
        else:
            out[region] = fut.result()
    return out


def elsewhere(
    session: Any, here: str, stack: str, states: list[str], everywhere: bool
) -> list[Elsewhere]:
    """Where else the stack is: regions with local state (and how many instances each has);
    with `everywhere`, every region of the partition is asked too."""
    local = local_regions(stack, here)
    asked = every_region(session, here) if everywhere else local
    counts = count_instances(session, asked, stack, states)
    found = []
    for region in sorted(set(local) | set(counts)):
        got = counts.get(region)
        n = got if isinstance(got, int) else None
        error = got if isinstance(got, str) else ""
        if n or error or region in local:
            found.append(Elsewhere(region, n, region in local, error))
    return found
