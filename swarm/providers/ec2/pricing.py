"""What an EC2 stack costs: hourly prices, the estimate before `up`, the spend so far.

On-demand prices come from the AWS Price List API (`pricing`, served from us-east-1), spot
prices from the region's spot price history. A price nobody answered for is `None` ("unknown")
with the reason in `Price.source`: never a guessed figure. Nothing here raises on an AWS, network
or credentials failure, so a cost line can never block `up` or `down`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from swarm.errors import SwarmError
from swarm.models import Lifecycle, Node
from swarm.providers.ec2.errors import error_code

if TYPE_CHECKING:
    from swarm.providers.ec2.provider import Ec2Provider

ON_DEMAND, SPOT = Lifecycle.ON_DEMAND, Lifecycle.SPOT
DENIED = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "AuthFailure",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
        "OptInRequired",
    }
)
# Every public IPv4 address, attached or not, since 1 Feb 2024 (AWS "New AWS Public IPv4
# Address Charge", VPC pricing): an instance launched with connect = "public" has one. Not in
# the Price List's instance prices, so added here.
PUBLIC_IPV4_USD_PER_HOUR = 0.005
PRICING_REGION = (
    "us-east-1"  # the Price List API answers only in us-east-1 / ap-south-1 / eu-central-1
)


@dataclass(frozen=True)
class Price:
    """One instance type's hourly price (usd_per_hour None = unknown, source says why)."""

    instance_type: str
    lifecycle: str
    usd_per_hour: float | None
    source: str


def _why(exc: BaseException) -> str:
    """A short reason for a failed lookup: the AWS error code, else the (wrapped) exception's
    class."""
    if isinstance(exc, SwarmError):
        cause = exc.__cause__ or exc
        return exc.code or type(cause).__name__
    return error_code(exc) or type(exc).__name__


def _whole_service(exc: BaseException) -> bool:
    """Network, credentials or permission failures: not about one instance type."""
    from botocore.exceptions import BotoCoreError

    return isinstance(exc, (BotoCoreError, SwarmError)) or _why(exc) in DENIED


class PriceBook:
    """Prices of one provider's region, each looked up once (per type, lifecycle, az).

    `clients` ({"pricing": ..., "ec2": ...}) replaces the clients made from the provider
    (tests pass botocore-stubbed ones)."""

    def __init__(self, provider: Ec2Provider, clients: dict[str, Any] | None = None):
        self.provider = provider
        self._clients = dict(clients or {})
        self._cache: dict[tuple[str, str, str | None], Price] = {}
        self._down: dict[str, str] = {}  # service -> why it failed for every type (no retrying)

    def _client(self, service: str) -> Any:
        if service not in self._clients:
            if service == "pricing":
                from botocore.config import Config as BotoConfig

                # A price is a nicety: it must never hold up up/status/down for long.
                conf = BotoConfig(
                    retries={"mode": "standard", "total_max_attempts": 2},
                    connect_timeout=5,
                    read_timeout=15,
                )
                self._clients[service] = self.provider.session.client(
                    "pricing", region_name=PRICING_REGION, config=conf
                )
            else:
                self._clients[service] = self.provider.client(service)
        return self._clients[service]

    def price(self, instance_type: str, lifecycle: str, az: str | None = None) -> Price:
        key = (instance_type, lifecycle, (az or None) if lifecycle == SPOT else None)
        if key not in self._cache:
            self._cache[key] = self._lookup(instance_type, lifecycle, key[2])
        return self._cache[key]

    def _lookup(self, itype: str, lifecycle: str, az: str | None) -> Price:
        label, service = ("spot history", "ec2") if lifecycle == SPOT else ("price list", "pricing")
        if lifecycle not in (SPOT, ON_DEMAND):
            return Price(itype, lifecycle, None, f"unknown lifecycle {lifecycle!r}")
        if service in self._down:
            return Price(itype, lifecycle, None, self._down[service])
        try:
            usd, source = self._spot(itype, az) if lifecycle == SPOT else self._on_demand(itype)
        except Exception as exc:  # noqa: BLE001 - a price is never worth failing a command for
            why = f"{label} unavailable: {_why(exc)}"
            if _whole_service(exc):
                self._down[service] = why  # same answer for every type: don't ask again
            return Price(itype, lifecycle, None, why)
        return Price(itype, lifecycle, usd, source)

    def _on_demand(self, itype: str) -> tuple[float | None, str]:
        region = self.provider.region
        terms = {
            "instanceType": itype,
            "regionCode": region,
            "operatingSystem": "Linux",
            "tenancy": "Shared",
            "preInstalledSw": "NA",
            "capacitystatus": "Used",
        }
        resp = self._client("pricing").get_products(
            ServiceCode="AmazonEC2",
            MaxResults=10,
            Filters=[{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in terms.items()],
        )
        for raw in resp.get("PriceList", []):
            product = json.loads(raw) if isinstance(raw, str) else raw
            for term in product.get("terms", {}).get("OnDemand", {}).values():
                for dim in term.get("priceDimensions", {}).values():
                    usd = float(dim.get("pricePerUnit", {}).get("USD", 0) or 0)
                    if usd > 0 and dim.get("unit", "Hrs").lower().startswith("hr"):
                        return usd, "price list"
        return None, f"price list: no Linux on-demand price for {itype} in {region}"

    def _spot(self, itype: str, az: str | None) -> tuple[float | None, str]:
        params: dict[str, Any] = {
            "InstanceTypes": [itype],
            "ProductDescriptions": ["Linux/UNIX"],
            "StartTime": datetime.now(timezone.utc),
        }
        if az:
            params["AvailabilityZone"] = az
        history = (
            self._client("ec2").describe_spot_price_history(**params).get("SpotPriceHistory", [])
        )
        latest: dict[str, tuple[Any, float]] = {}  # az -> (timestamp, price) of its newest entry
        for h in history:
            zone, stamp = h.get("AvailabilityZone", ""), h.get("Timestamp")
            if (
                h.get("InstanceType", itype) != itype
                or not h.get("SpotPrice")
                or az not in (None, zone)
            ):
                continue
            if zone not in latest or (
                stamp is not None and (latest[zone][0] is None or stamp > latest[zone][0])
            ):
                latest[zone] = (stamp, float(h["SpotPrice"]))
        if not latest:
            where = az or self.provider.region
            return None, f"spot history: no Linux/UNIX spot price for {itype} in {where}"
        cheapest = min(p for _, p in latest.values())
        return cheapest, "spot history" if az or len(
            latest
        ) == 1 else "spot history (cheapest zone)"


def estimate_hourly(
    book: PriceBook, items: list[tuple[str, str, int]], public_ips: int = 0
) -> tuple[float | None, list[Price]]:
    """The hourly cost of `items` [(instance_type, lifecycle, count)] and `public_ips`
    public IPv4 addresses: None if any price is unknown."""
    prices: list[Price] = []
    total: float | None = public_ips * PUBLIC_IPV4_USD_PER_HOUR
    for itype, lifecycle, count in items:
        if count <= 0:
            continue
        p = book.price(itype, lifecycle)
        prices.append(p)
        if total is not None:
            total = None if p.usd_per_hour is None else total + p.usd_per_hour * count
    return total, prices


def spend(
    book: PriceBook, nodes: list[Node], now: float | None = None
) -> tuple[float | None, dict[str, float | None]]:
    """What each node has cost since it launched (hours × (its price + its public IPv4
    address, if it has one)); total None if any is unknown."""
    now = time.time() if now is None else now
    per_node: dict[str, float | None] = {}
    for n in nodes:
        itype = n.instance_type
        if not itype or n.launched_at is None:
            per_node[n.id] = None
            continue
        p = book.price(itype, n.lifecycle, n.zone)
        hours = max(0.0, now - n.launched_at) / 3600.0
        ipv4 = PUBLIC_IPV4_USD_PER_HOUR if n.public_ip else 0.0
        per_node[n.id] = None if p.usd_per_hour is None else hours * (p.usd_per_hour + ipv4)
    known = [v for v in per_node.values() if v is not None]
    return (sum(known) if len(known) == len(per_node) else None), per_node


def time_to_ttl(nodes: list[Node], now: float | None = None) -> float | None:
    """Seconds until the first node's TTL ends (negative: overdue); None if no node has one."""
    now = time.time() if now is None else now
    ends = [n.expires_at for n in nodes if n.expires_at]
    return min(ends) - now if ends else None


def format_usd(x: float | None) -> str:
    """$12.34 from $1 up, else up to four decimals ($0.2125, $0.085, $0.50); "unknown" for None."""
    if x is None:
        return "unknown"
    if abs(x) >= 1:
        return f"${x:,.2f}"
    text = f"{x:.4f}".rstrip("0")
    return "$" + text + "0" * max(0, 2 - len(text.split(".")[1]))


def format_rate(x: float | None) -> str:
    """ "$0.34/h", or "unknown"."""
    return "unknown" if x is None else f"{format_usd(x)}/h"
