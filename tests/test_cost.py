"""swarm.cost: prices from recorded AWS answers (botocore Stubber on real clients, in-process
moto for the spot history), the unknown paths, the estimate, the spend and the formatting.

No test opens a connection except to loopback (the endpoint-error test dials a closed local port).
"""
from __future__ import annotations

import datetime as dt
import json
import socket

import pytest

from tests.helpers import fake_aws_env, share_botocore_loader

boto3 = pytest.importorskip("boto3")
from botocore.config import Config as BotoConfig  # noqa: E402
from botocore.stub import ANY, Stubber  # noqa: E402

from swarm import config as swarm_config  # noqa: E402
from swarm.models import Lifecycle, Node, Role  # noqa: E402
from swarm.providers.base import Stack  # noqa: E402
from swarm.providers.ec2 import pricing as cost  # noqa: E402
from swarm.providers.ec2.pricing import Price, PriceBook, estimate_hourly, format_rate, format_usd, spend  # noqa: E402
from swarm.providers.ec2.provider import Ec2Provider  # noqa: E402

REGION = "us-east-1"
HOUR = 3600.0
UTC = dt.timezone.utc


# ---------------------------------------------------------------- guards and fixtures

@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Any connection to a non-loopback address fails the test."""
    real_connect = socket.socket.connect

    def connect(sock, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and host not in ("127.0.0.1", "::1", "localhost") \
                and not host.startswith("/"):
            raise AssertionError(f"test tried to connect to {address!r}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


@pytest.fixture(autouse=True)
def aws_env(monkeypatch, tmp_path):
    fake_aws_env(monkeypatch, tmp_path, REGION)


@pytest.fixture(autouse=True)
def shared_botocore_loader(monkeypatch):
    share_botocore_loader(monkeypatch)


def make_provider(region=REGION, **ec2) -> Ec2Provider:
    lines = ["[stack]", 'name = "alpha"', 'provider = "ec2"', "[ec2]", f'region = "{region}"',
             'ssh_cidr = "203.0.113.7/32"', *(f"{k} = {json.dumps(v)}" for k, v in ec2.items())]
    return Ec2Provider(swarm_config.parse("\n".join(lines) + "\n"))


def stubbed(service: str, region: str = REGION):
    client = boto3.Session(region_name=region).client(service, region_name=region)
    return client, Stubber(client)


@pytest.fixture
def pricing():
    client, stub = stubbed("pricing")
    with stub:
        yield client, stub
    stub.assert_no_pending_responses()


@pytest.fixture
def ec2():
    client, stub = stubbed("ec2")
    with stub:
        yield client, stub
    stub.assert_no_pending_responses()


@pytest.fixture
def book(pricing, ec2):
    return PriceBook(make_provider(), clients={"pricing": pricing[0], "ec2": ec2[0]})


# ---------------------------------------------------------------- recorded answers

def product(itype: str, usd: str, region: str = REGION, sku: str = "JF3NT6W2QTXR5YHB") -> str:
    """One Price List entry as GetProducts returns it: a JSON string (product + terms)."""
    on_demand = f"{sku}.JRTCKXETXF"
    reserved = f"{sku}.4NA7Y494T4"
    return json.dumps({
        "product": {
            "productFamily": "Compute Instance",
            "attributes": {
                "enhancedNetworkingSupported": "Yes", "intelTurboAvailable": "Yes", "memory": "4 GiB",
                "dedicatedEbsThroughput": "Up to 2250 Mbps", "vcpu": "2", "capacitystatus": "Used",
                "locationType": "AWS Region", "storage": "EBS only", "instanceFamily": "Compute optimized",
                "operatingSystem": "Linux", "regionCode": region,
                "physicalProcessor": "Intel Xeon Platinum 8124M",
                "clockSpeed": "3.4 GHz", "ecu": "10", "networkPerformance": "Up to 10 Gigabit",
                "servicename": "Amazon Elastic Compute Cloud", "instanceType": itype, "tenancy": "Shared",
                "usagetype": f"BoxUsage:{itype}", "normalizationSizeFactor": "4",
                "processorFeatures": "Intel AVX; Intel AVX2; Intel AVX512; Intel Turbo",
                "servicecode": "AmazonEC2", "licenseModel": "No License required",
                "currentGeneration": "Yes", "preInstalledSw": "NA", "location": "US East (N. Virginia)",
                "processorArchitecture": "64-bit", "marketoption": "OnDemand", "operation": "RunInstances",
                "availabilityzone": "NA"},
            "sku": sku},
        "serviceCode": "AmazonEC2",
        "terms": {
            "OnDemand": {on_demand: {
                "priceDimensions": {f"{on_demand}.6YS6EN2CT7": {
                    "unit": "Hrs", "endRange": "Inf",
                    "description": f"${float(usd):.3f} per On Demand Linux {itype} Instance Hour",
                    "appliesTo": [], "rateCode": f"{on_demand}.6YS6EN2CT7", "beginRange": "0",
                    "pricePerUnit": {"USD": usd}}},
                "sku": sku, "effectiveDate": "2024-06-01T00:00:00Z",
                "offerTermCode": "JRTCKXETXF", "termAttributes": {}}},
            "Reserved": {reserved: {   # an upfront fee must never be read as an hourly price
                "priceDimensions": {
                    f"{reserved}.2TG2D8R56U": {
                        "unit": "Quantity", "description": "Upfront Fee", "appliesTo": [],
                        "rateCode": f"{reserved}.2TG2D8R56U", "pricePerUnit": {"USD": "447"}},
                    f"{reserved}.6YS6EN2CT7": {
                        "unit": "Hrs", "endRange": "Inf", "beginRange": "0", "appliesTo": [],
                        "description": "Linux/UNIX (Amazon VPC), c5.large reserved instance applied",
                        "rateCode": f"{reserved}.6YS6EN2CT7", "pricePerUnit": {"USD": "0.0510000000"}}},
                "sku": sku, "effectiveDate": "2024-06-01T00:00:00Z", "offerTermCode": "4NA7Y494T4",
                "termAttributes": {"LeaseContractLength": "1yr", "OfferingClass": "standard",
                                   "PurchaseOption": "Partial Upfront"}}}},
        "version": "20240601000000", "publicationDate": "2024-06-01T00:00:00Z"})


def products_answer(*entries: str) -> dict:
    return {"FormatVersion": "aws_v1", "PriceList": list(entries)}


def products_params(itype: str, region: str = REGION) -> dict:
    terms = [("instanceType", itype), ("regionCode", region), ("operatingSystem", "Linux"),
             ("tenancy", "Shared"), ("preInstalledSw", "NA"), ("capacitystatus", "Used")]
    return {"ServiceCode": "AmazonEC2", "MaxResults": 10,
            "Filters": [{"Type": "TERM_MATCH", "Field": f, "Value": v} for f, v in terms]}


def spot_entry(itype: str, az: str, usd: str, minutes_ago: int) -> dict:
    stamp = dt.datetime(2025, 3, 1, 12, 0, tzinfo=UTC) - dt.timedelta(minutes=minutes_ago)
    return {"AvailabilityZone": az, "InstanceType": itype, "ProductDescription": "Linux/UNIX",
            "SpotPrice": usd, "Timestamp": stamp}


def node(nid: str, itype="c5.large", lifecycle="on-demand", launched_at=1_700_000_000.0,
         az="us-east-1a", **fields) -> Node:
    fields.setdefault("role", Role.WORKER)
    return Node(id=nid, name="", launched_at=launched_at, instance_type=itype,
                lifecycle=Lifecycle(lifecycle), zone=az, **fields)


# ---------------------------------------------------------------- on-demand

def test_on_demand_price_from_the_price_list(book, pricing):
    pricing[1].add_response("get_products", products_answer(product("c5.large", "0.0850000000")),
                            products_params("c5.large"))
    assert book.price("c5.large", "on-demand") == Price("c5.large", "on-demand", 0.085, "price list")


def test_on_demand_asks_once_per_type(book, pricing):
    stub = pricing[1]
    stub.add_response("get_products", products_answer(product("c5.large", "0.0850000000")),
                      products_params("c5.large"))
    stub.add_response("get_products", products_answer(product("c5.xlarge", "0.1700000000")),
                      products_params("c5.xlarge"))
    first = book.price("c5.large", "on-demand")
    assert book.price("c5.large", "on-demand") is first
    assert book.price("c5.large", "on-demand", az="us-east-1b") is first    # az only matters for spot
    assert book.price("c5.xlarge", "on-demand").usd_per_hour == 0.17
    total, per_node = spend(book, [node(f"i-{k}") for k in range(5)], now=1_700_000_000.0 + HOUR)
    assert total == pytest.approx(5 * 0.085) and len(per_node) == 5     # the stubber has no 3rd answer


def test_no_matching_product_is_unknown(book, pricing):
    pricing[1].add_response("get_products", products_answer(), products_params("c5.nano"))
    p = book.price("c5.nano", "on-demand")
    assert p.usd_per_hour is None
    assert p.source == "price list: no Linux on-demand price for c5.nano in us-east-1"


def test_default_pricing_client_is_us_east_1_from_the_provider_session():
    provider = make_provider(region="eu-west-1")
    client = PriceBook(provider)._client("pricing")
    assert client.meta.region_name == "us-east-1"
    # A price must never hold a command up for long: few attempts, short timeouts.
    assert client.meta.config.retries == {"mode": "standard", "total_max_attempts": 2}
    assert (client.meta.config.connect_timeout, client.meta.config.read_timeout) == (5, 15)
    assert client._request_signer._credentials.access_key == "testing"      # provider.session's chain


# ---------------------------------------------------------------- spot

def test_spot_price_from_moto_history():
    moto = pytest.importorskip("moto")
    with moto.mock_aws():
        book = PriceBook(make_provider())                          # the provider's own ec2 client
        anywhere = book.price("c5.large", "spot")
        in_zone = book.price("c5.large", "spot", az="us-east-1a")
    assert anywhere == Price("c5.large", "spot", 0.00001, "spot history (cheapest zone)")
    assert in_zone == Price("c5.large", "spot", 0.00001, "spot history")


def test_spot_takes_the_latest_price_and_the_cheapest_zone(book, ec2):
    history = [spot_entry("c5.large", az, usd, ago) for az, usd, ago in [
        ("us-east-1a", "0.0400", 90), ("us-east-1a", "0.0380", 5),      # 1a now: 0.038 (cheapest)
        ("us-east-1b", "0.0350", 200), ("us-east-1b", "0.0410", 1),     # 1b now: 0.041
        ("us-east-1c", "0.0390", 30)]]
    ask = {"InstanceTypes": ["c5.large"], "ProductDescriptions": ["Linux/UNIX"], "StartTime": ANY}
    ec2[1].add_response("describe_spot_price_history", {"SpotPriceHistory": history}, ask)
    ec2[1].add_response("describe_spot_price_history",      # AWS answers for the one zone asked
                        {"SpotPriceHistory": [h for h in history if h["AvailabilityZone"] == "us-east-1b"]},
                        {**ask, "AvailabilityZone": "us-east-1b"})
    assert book.price("c5.large", "spot") == Price("c5.large", "spot", 0.038, "spot history (cheapest zone)")
    assert book.price("c5.large", "spot", az="us-east-1b") == Price("c5.large", "spot", 0.041, "spot history")
    assert book.price("c5.large", "spot") is book.price("c5.large", "spot", az="")


def test_spot_request_names_type_product_and_zone(book, ec2):
    seen = []
    ec2[0].meta.events.register("provide-client-params.ec2.DescribeSpotPriceHistory",
                                lambda params, **_: seen.append(dict(params)))
    ec2[1].add_response("describe_spot_price_history", {"SpotPriceHistory": []})
    p = book.price("m7g.medium", "spot", az="us-east-1f")
    assert p.usd_per_hour is None
    assert p.source == "spot history: no Linux/UNIX spot price for m7g.medium in us-east-1f"
    (params,) = seen
    assert params["InstanceTypes"] == ["m7g.medium"] and params["ProductDescriptions"] == ["Linux/UNIX"]
    assert params["AvailabilityZone"] == "us-east-1f"
    assert abs(params["StartTime"] - dt.datetime.now(UTC)) < dt.timedelta(minutes=1)


# ---------------------------------------------------------------- unknown, never raised

def test_access_denied_is_unknown_and_not_asked_again(book, pricing):
    pricing[1].add_client_error("get_products", service_error_code="AccessDeniedException",
                                service_message="User is not authorized to perform: pricing:GetProducts",
                                http_status_code=400)
    p = book.price("c5.large", "on-demand")
    assert p == Price("c5.large", "on-demand", None, "price list unavailable: AccessDeniedException")
    other = book.price("c5.xlarge", "on-demand")                  # no second call: the stub has none
    assert other.usd_per_hour is None and other.source == p.source


def test_throttling_is_unknown_but_other_types_are_still_asked(book, pricing):
    stub = pricing[1]
    stub.add_client_error("get_products", service_error_code="ThrottlingException",
                          service_message="Rate exceeded", http_status_code=400)
    stub.add_response("get_products", products_answer(product("c5.xlarge", "0.1700000000")),
                      products_params("c5.xlarge"))
    assert book.price("c5.large", "on-demand").source == "price list unavailable: ThrottlingException"
    assert book.price("c5.xlarge", "on-demand").usd_per_hour == 0.17


def test_spot_access_denied_is_unknown(book, ec2):
    ec2[1].add_client_error("describe_spot_price_history", service_error_code="UnauthorizedOperation",
                            service_message="You are not authorized to perform this operation.",
                            http_status_code=403)
    p = book.price("c5.large", "spot", az="us-east-1a")
    assert p == Price("c5.large", "spot", None, "spot history unavailable: UnauthorizedOperation")


def test_unreachable_endpoint_is_unknown():
    with socket.socket() as s:                       # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = boto3.Session().client(
        "pricing", region_name="us-east-1", endpoint_url=f"http://127.0.0.1:{port}",
        config=BotoConfig(retries={"mode": "standard", "max_attempts": 1}, connect_timeout=2))
    book = PriceBook(make_provider(), clients={"pricing": client})
    p = book.price("c5.large", "on-demand")
    assert p == Price("c5.large", "on-demand", None, "price list unavailable: EndpointConnectionError")


def test_no_credentials_is_unknown(monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    for var in ("AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    book = PriceBook(make_provider())
    assert book.price("c5.large", "spot").source == "spot history unavailable: NoCredentialsError"
    assert book.price("c5.large", "on-demand").source == "price list unavailable: NoCredentialsError"


def test_bad_profile_is_unknown_not_an_error():
    book = PriceBook(make_provider(profile="no-such-profile"))
    p = book.price("c5.large", "on-demand")
    assert p.usd_per_hour is None and p.source == "price list unavailable: ProfileNotFound"


def test_garbled_answer_and_odd_lifecycle_are_unknown(book, pricing):
    pricing[1].add_response("get_products", products_answer("{not json"), products_params("c5.large"))
    assert book.price("c5.large", "on-demand").source == "price list unavailable: JSONDecodeError"
    assert book.price("c5.large", "reserved") == Price("c5.large", "reserved", None,
                                                       "unknown lifecycle 'reserved'")


# ---------------------------------------------------------------- estimate and spend

def test_estimate_sums_every_node(book, pricing, ec2):
    pricing[1].add_response("get_products", products_answer(product("c5.large", "0.0850000000")),
                            products_params("c5.large"))
    ec2[1].add_response("describe_spot_price_history", {"SpotPriceHistory": [
        spot_entry("c5.xlarge", "us-east-1a", "0.0712", 3),
        spot_entry("c5.xlarge", "us-east-1d", "0.0690", 9)]})
    total, prices = estimate_hourly(book, [("c5.large", "on-demand", 1), ("c5.xlarge", "spot", 4),
                                           ("m5.large", "on-demand", 0)])
    assert total == pytest.approx(0.085 + 4 * 0.069)
    assert [p.instance_type for p in prices] == ["c5.large", "c5.xlarge"]   # count 0: not asked


def test_estimate_is_unknown_when_one_type_is(book, pricing):
    pricing[1].add_response("get_products", products_answer(product("c5.large", "0.0850000000")),
                            products_params("c5.large"))
    pricing[1].add_response("get_products", products_answer(), products_params("x9.huge"))
    total, prices = estimate_hourly(book, [("c5.large", "on-demand", 1), ("x9.huge", "on-demand", 3)])
    assert total is None                                          # never the partial $0.085
    assert [p.usd_per_hour for p in prices] == [0.085, None]
    assert estimate_hourly(book, []) == (0.0, [])


def test_spend_of_a_c5_large_over_two_and_a_half_hours(book, pricing):
    pricing[1].add_response("get_products", products_answer(product("c5.large", "0.0850000000")),
                            products_params("c5.large"))
    n = node("i-0abc", launched_at=1_700_000_000.0)
    total, per_node = spend(book, [n], now=1_700_000_000.0 + 2.5 * HOUR)
    assert total == pytest.approx(0.2125) and per_node == {"i-0abc": pytest.approx(0.2125)}
    assert format_usd(total) == "$0.2125"


def test_spend_is_unknown_when_a_node_is(book, pricing, ec2):
    pricing[1].add_response("get_products", products_answer(product("c5.large", "0.0850000000")),
                            products_params("c5.large"))
    ec2[1].add_client_error("describe_spot_price_history", service_error_code="UnauthorizedOperation",
                            http_status_code=403)
    nodes = [node("i-1"), node("i-2", lifecycle="spot"), node("i-3", launched_at=None),
             node("i-4", launched_at=1_700_000_000.0 + 10 * HOUR)]        # clock skew: nothing yet
    total, per_node = spend(book, nodes, now=1_700_000_000.0 + HOUR)
    assert total is None
    assert per_node == {"i-1": pytest.approx(0.085), "i-2": None, "i-3": None, "i-4": 0.0}
    assert spend(book, [], now=0.0) == (0.0, {})


def test_spend_of_nodes_listed_by_the_provider(pricing):
    moto = pytest.importorskip("moto")
    pricing[1].add_response("get_products", products_answer(product("c5.large", "0.0850000000")),
                            products_params("c5.large"))
    with moto.mock_aws():
        provider = make_provider()
        from moto.ec2.models import ec2_backends
        image = next(iter(ec2_backends["123456789012"][REGION].amis))
        raw = boto3.client("ec2", region_name=REGION)
        raw.run_instances(ImageId=image, InstanceType="c5.large", MinCount=2, MaxCount=2,
                          TagSpecifications=[{"ResourceType": "instance", "Tags": [
                              {"Key": "swarm:stack", "Value": "alpha"},
                              {"Key": "swarm:role", "Value": "worker"},
                              {"Key": "swarm:ssh-user", "Value": "ubuntu"}]}])
        nodes = provider.list_nodes(Stack.from_config(provider.config))
        book = PriceBook(provider, clients={"pricing": pricing[0]})
        start = max(n.launched_at for n in nodes)
        total, per_node = spend(book, nodes, now=start + 2.5 * HOUR)
    assert len(nodes) == 2 and all(n.lifecycle == "on-demand" for n in nodes)
    ipv4 = sum(2.5 * cost.PUBLIC_IPV4_USD_PER_HOUR for n in nodes if n.public_ip)
    assert total == pytest.approx(2 * 0.2125 + ipv4, abs=1e-3) and set(per_node) == {n.id for n in nodes}


def test_a_public_ipv4_address_is_charged_with_its_node(book, pricing):
    """$0.005 per public IPv4 address-hour since Feb 2024: a node with a public address
    costs that on top of its instance price; one without does not."""
    pricing[1].add_response("get_products", products_answer(product("c5.large", "0.0850000000")),
                            products_params("c5.large"))
    public = node("i-pub", public_ip="54.1.2.3", private_ip="10.0.0.5")
    private = node("i-priv", private_ip="10.0.0.6")
    total, per_node = spend(book, [public, private], now=1_700_000_000.0 + 2 * HOUR)
    assert per_node == {"i-pub": pytest.approx(2 * (0.085 + 0.005)),
                        "i-priv": pytest.approx(2 * 0.085)}
    assert total == pytest.approx(4 * 0.085 + 2 * 0.005)


def test_the_estimate_counts_public_addresses_only_when_nodes_get_them(book, pricing):
    from swarm.pipeline.cost import estimate
    from swarm.pipeline.session import Session

    pricing[1].add_response("get_products", products_answer(product("c5.large", "0.0850000000")),
                            products_params("c5.large"))
    total, _ = estimate_hourly(book, [("c5.large", "on-demand", 3)], public_ips=3)
    assert total == pytest.approx(3 * 0.085 + 3 * 0.005)
    assert estimate_hourly(book, [("c5.large", "on-demand", 0)], public_ips=2)[0] == pytest.approx(0.01)

    lines = {}
    for connect in ("public", "private"):
        provider = make_provider(connect=connect)
        provider.price_book = lambda: book          # the recorded answers above
        sess = Session(Stack.from_config(provider.config), provider)
        lines[connect] = estimate(sess, Role.WORKER, 2, [node("i-m", role=Role.MASTER)])
    assert lines["public"] == ("estimated cost: $0.27/h for the stack (1 master + 2 workers, "
                               "on-demand; 3 public IPv4 address(es) at $0.005/h each included)")
    assert lines["private"] == ("estimated cost: $0.255/h for the stack (1 master + 2 workers, "
                                "on-demand)")


# ---------------------------------------------------------------- formatting

@pytest.mark.parametrize("value, text", [
    (None, "unknown"), (0.0, "$0.00"), (0.5, "$0.50"), (0.085, "$0.085"), (0.2125, "$0.2125"),
    (0.34, "$0.34"), (0.99999, "$1.00"), (12.3456, "$12.35"), (1234.5, "$1,234.50")])
def test_format_usd(value, text):
    assert format_usd(value) == text


def test_format_rate_and_time_to_ttl():
    assert format_rate(0.34) == "$0.34/h" and format_rate(None) == "unknown"
    nodes = [node("i-1", expires_at=5_000.0), node("i-2", expires_at=4_000.0), node("i-3")]
    assert cost.time_to_ttl(nodes, now=1_000.0) == 3_000.0
    assert cost.time_to_ttl([node("i-3")], now=1_000.0) is None


def test_price_is_a_frozen_record():
    p = Price("c5.large", "on-demand", 0.085, "price list")
    with pytest.raises(AttributeError):
        p.usd_per_hour = 1.0  # type: ignore[misc]
