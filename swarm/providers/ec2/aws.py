"""The AWS session and clients of the EC2 provider: one session, one client per service,
retries as the user's AWS config says (else adaptive, 8 attempts)."""

from __future__ import annotations

import gzip
import json
import os
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from swarm.config.schema import Ec2Section
from swarm.errors import ProviderError, UsageError
from swarm.providers.ec2.errors import aws_errors, error_code, transport_error

T = TypeVar("T")

# Capacity errors: not retried by botocore (below); a spot launch falls back to on-demand.
# Not quotas (MaxSpotInstanceCountExceeded): a limit reached is said, never paid around.
SPOT_FALLBACK_CODES = frozenset(
    {
        "InsufficientInstanceCapacity",
        "InsufficientCapacity",
        "SpotMaxPriceTooLow",
        "UnfulfillableCapacity",
        "InsufficientHostCapacity",
    }
)
BATCH = 100  # ids per DescribeInstances / TerminateInstances call
# EC2's eventual consistency: a resource just created can be "not found" by the next call
# that uses it ("Eventual consistency in the Amazon EC2 API"); it shows up within seconds.
JUST_CREATED = frozenset(
    {"InvalidGroup.NotFound", "InvalidKeyPair.NotFound", "InvalidInstanceID.NotFound"}
)
JUST_CREATED_WAIT_S = 60.0
# A launch may have happened although its answer never came (a 5xx, a dropped connection):
# EC2 says to repeat it with the same ClientToken, which returns the first launch's instances
# rather than new ones ("Ensuring idempotency in Amazon EC2 API requests"). botocore repeats
# each call a few times with one token; when those run out, the launch asks again itself,
# with the same token, for this long. Codes of botocore's transport errors are their names.
ANSWER_LOST = frozenset(
    {
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "Unavailable",
        "ConnectionClosedError",
        "ReadTimeoutError",
        "EndpointConnectionError",
        "ConnectTimeoutError",
    }
)
ANSWER_LOST_WAIT_S = 30.0


def retry_while(
    call: Callable[[], T],
    codes: frozenset[str],
    budget_s: float,
    on_wait: Callable[[str, float], None] | None = None,
    code_of: Callable[[BaseException], str] | None = None,
) -> T:
    """call(), retried with backoff (0.5 s, doubling to 8 s) while it fails with one of
    `codes`, for at most `budget_s`; then its last error is raised. `on_wait(code, waited_s)`
    before each pause; `code_of(exc)`: a failure's code, where its AWS code alone does not
    say (default: the AWS code, or the transport error's name). For failures AWS documents
    as passing, never for a caller's mistake."""
    deadline = time.monotonic() + budget_s
    delay, waited = 0.5, 0.0
    for _ in range(int(budget_s / 0.5) + 2):  # bounded in count as well as in time
        try:
            return call()
        except Exception as exc:
            code = code_of(exc) if code_of else error_code(exc) or transport_error(exc)
            if code not in codes or time.monotonic() + delay > deadline:
                raise
            if on_wait is not None:
                on_wait(code, waited)
            time.sleep(delay)
            waited += delay
            delay = min(delay * 2, 8.0)
    return call()


def chunks(items: list[str], size: int = BATCH) -> Iterable[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _no_retry_on_capacity(response: Any = None, **_: Any) -> None:
    """botocore retries every HTTP 500 and EC2 sends capacity errors as 500s: retrying them
    for a minute helps nobody (capacity comes back in minutes, if at all) and delays the spot
    fallback. Raise the error at once instead (a needs-retry handler may raise)."""
    if response is not None:
        parsed = response[1] if isinstance(response, tuple) and len(response) > 1 else {}
        code = (parsed or {}).get("Error", {}).get("Code")
        if code in SPOT_FALLBACK_CODES:
            from botocore.exceptions import ClientError

            raise ClientError(parsed, "RunInstances")


class _DictJsonFiles:
    """botocore's JSON file loader (`exists`, `load_file`, the path without its extension),
    parsing into dicts where botocore's parses into OrderedDicts (dicts keep their order since
    Python 3.7). Every command reads the EC2 model and the endpoints file, 5.6 MB of JSON:
    78 ms with the OrderedDict hook, 35 ms without, here."""

    _KINDS = ((".json", open), (".json.gz", gzip.open))

    def exists(self, file_path: str) -> bool:
        return any(os.path.isfile(file_path + ext) for ext, _ in self._KINDS)

    def load_file(self, file_path: str) -> Any:
        for ext, opener in self._KINDS:
            if os.path.isfile(file_path + ext):
                with opener(file_path + ext, "rb") as f:
                    return json.loads(f.read().decode("utf-8"))
        return None


class Session:
    """The part of boto3.Session that swarm uses (clients, the region, the partitions), on
    botocore's session, as boto3's is. Importing boto3 brings s3transfer and multiprocessing
    along: a fifth of a CPU-second at every command, for resources swarm never uses. The
    credentials and config chain are botocore's own, the same either way."""

    def __init__(self, profile: str | None = None, region: str | None = None):
        import botocore.session
        from botocore.loaders import Loader

        self._session = botocore.session.Session()
        # as botocore's own loader (AWS_DATA_PATH / data_path first), parsing into dicts
        paths = self._session.get_config_variable("data_path") or ""
        extra = [os.path.expanduser(p) for p in paths.split(os.pathsep) if p]
        self._session.register_component(
            "data_loader", Loader(extra_search_paths=extra, file_loader=_DictJsonFiles())
        )
        if profile is not None:
            self._session.set_config_variable("profile", profile)
        if region is not None:
            self._session.set_config_variable("region", region)

    @property
    def region_name(self) -> str | None:
        return self._session.get_config_variable("region")

    def config_variable(self, name: str) -> Any:
        """botocore's config chain: environment, ~/.aws/config, defaults."""
        return self._session.get_config_variable(name)

    def client(self, service: str, **kwargs: Any) -> Any:
        return self._session.create_client(service, **kwargs)

    def get_available_partitions(self) -> list[str]:
        return self._session.get_available_partitions()

    def get_available_regions(self, service: str, partition_name: str = "aws") -> list[str]:
        return self._session.get_available_regions(service, partition_name=partition_name)

    def get_partition_for_region(self, region: str) -> str:
        return self._session.get_partition_for_region(region)


class AwsClients:
    """boto3 is imported on first use: commands that never reach AWS don't pay for it."""

    def __init__(self, cfg: Ec2Section, session: Any = None):
        self.cfg = cfg
        self._session = session
        self._region: str | None = None
        self._clients: dict[str, Any] = {}

    @property
    def session(self) -> Any:
        if self._session is None:
            with aws_errors("open an AWS session"):
                self._session = Session(profile=self.cfg.profile, region=self.cfg.region)
        return self._session

    @property
    def region(self) -> str:
        if self._region is None:
            region = self.cfg.region or self.session.region_name
            if not region:
                raise ProviderError(
                    'no AWS region configured: set [ec2] region (e.g. "eu-west-1") '
                    "or AWS_DEFAULT_REGION"
                )
            self._check_region(region)
            self._region = region
        return self._region

    def _check_region(self, region: str) -> None:
        """A well-formed but unknown region would fail later in a confusing way (no DNS name;
        an endpoint override answering 500): refuse it now, naming it."""
        try:
            known = {
                r
                for part in self.session.get_available_partitions()
                for r in self.session.get_available_regions("ec2", partition_name=part)
            }
        except Exception:  # noqa: BLE001 - no list to check against: let AWS answer
            return
        if known and region not in known:
            where = "[ec2] region" if self.cfg.region else "the AWS config's region"
            raise UsageError(
                f'{where} {region!r} is not an EC2 region: fix it (e.g. "eu-west-1"); '
                "if AWS opened it recently, upgrade boto3"
            )

    def _retries(self) -> dict[str, Any]:
        """Adaptive retries, 8 attempts, unless the user's AWS config (AWS_MAX_ATTEMPTS,
        AWS_RETRY_MODE, max_attempts/retry_mode in ~/.aws/config) says otherwise."""
        retries: dict[str, Any] = {}
        get = self.session.config_variable
        if not get("retry_mode"):
            retries["mode"] = "adaptive"
        if not get("max_attempts"):
            retries["max_attempts"] = 8
        return retries

    def client(self, service: str) -> Any:
        if service not in self._clients:
            from botocore.config import Config as BotoConfig

            conf = BotoConfig(retries=self._retries(), connect_timeout=10, read_timeout=60)
            with aws_errors(f"create the {service} client", self.region):
                self._clients[service] = self.session.client(
                    service, region_name=self.region, config=conf
                )
            if service == "ec2":
                self._clients[service].meta.events.register_first(
                    "needs-retry.ec2.RunInstances", _no_retry_on_capacity
                )
        return self._clients[service]

    @property
    def ec2(self) -> Any:
        return self.client("ec2")
