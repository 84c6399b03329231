"""Spot or on-demand: the markets a launch tries, as `[ec2] spot` says.

`true`: spot, then on-demand after a capacity error only (never after a quota or permission
error: a spot quota reached is said, not paid around); `"required"`: spot, and its capacity
error is the error; `false`: on-demand. The nodes' `lifecycle` says where they were launched,
so the pipeline re-prices a fallback.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from swarm.config.schema import Spot
from swarm.errors import ProviderError
from swarm.models import Lifecycle
from swarm.providers.ec2.aws import SPOT_FALLBACK_CODES
from swarm.providers.ec2.batches import OnDemandTried
from swarm.providers.ec2.errors import aws_errors

SPOT_OPTIONS = {
    "MarketType": "spot",
    "SpotOptions": {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"},
}


def attempts(spot: Spot) -> list[tuple[dict[str, Any], Lifecycle]]:
    """The markets a launch tries in turn, as (RunInstances' market options, its market):
    the next one only after a capacity error of the one before."""
    on_spot = ({"InstanceMarketOptions": SPOT_OPTIONS}, Lifecycle.SPOT)
    on_demand: tuple[dict[str, Any], Lifecycle] = ({}, Lifecycle.ON_DEMAND)
    if spot is Spot.REQUIRED:
        return [on_spot]
    return [on_spot, on_demand] if spot is Spot.PREFERRED else [on_demand]


def launch(
    run: Callable[..., Any],
    params: dict[str, Any],
    spot: Spot,
    what: str,
    whose: str,
    region: str,
    progress: Callable[[str], None],
) -> Any:
    """`run(**market, **params)` (one RunInstances) in each market of `attempts(spot)` in turn;
    `what`: '2 c5.large worker node(s)', `whose`: 'stack NAME', for the messages."""
    action = f"launch {what} for {whose}"
    tries = attempts(spot)
    for i, (market, lifecycle) in enumerate(tries):
        try:
            with aws_errors(action, region, params.get("InstanceType")):
                return run(**market, **params)
        except ProviderError as exc:
            if (
                lifecycle is not Lifecycle.SPOT
                or exc.code not in SPOT_FALLBACK_CODES
                or isinstance(exc, OnDemandTried)
            ):
                raise
            if i + 1 == len(tries):
                raise ProviderError(
                    f"no spot capacity in {region} for {what} of {whose} ({exc.code}), and "
                    '[ec2] spot = "required" rules out on-demand: retry later, pick another '
                    "[ec2] master_type/worker_type, or set spot = true to launch on-demand "
                    "when spot has none",
                    code=exc.code,
                    action="retry later, or set [ec2] spot = true",
                ) from exc
            progress(f"no spot capacity for {what} ({exc.code}): launching them on-demand")
    raise AssertionError("attempts() is never empty")
