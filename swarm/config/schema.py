"""The keys of swarm.toml: each declared once, with its type, default and check.

A section is a frozen dataclass; each field's metadata holds the function that checks and
converts the TOML value (raising ValueError with the reason). `config.parse` reads the table
from these fields, so a key exists exactly when a field does.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from swarm.models import Word

PROVIDERS = ("local", "hosts", "ec2")
_CANONICAL = "/aws/service/canonical/ubuntu/server/{ver}/stable/current/{arch}/hvm/{disk}/ami-id"
_AL2023 = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-{arch}"
# [ec2] ami aliases -> (SSH user, public SSM parameter for x86_64, for arm64)
AMI_ALIASES: dict[str, tuple[str, str, str]] = {
    "ubuntu-22.04": (
        "ubuntu",
        _CANONICAL.format(ver="22.04", arch="amd64", disk="ebs-gp2"),
        _CANONICAL.format(ver="22.04", arch="arm64", disk="ebs-gp2"),
    ),
    "ubuntu-24.04": (
        "ubuntu",
        _CANONICAL.format(ver="24.04", arch="amd64", disk="ebs-gp3"),
        _CANONICAL.format(ver="24.04", arch="arm64", disk="ebs-gp3"),
    ),
    "al2023": ("ec2-user", _AL2023.format(arch="x86_64"), _AL2023.format(arch="arm64")),
}
STACK_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
HOST_RE = re.compile(
    r"^(?:(?P<user>[A-Za-z_][A-Za-z0-9_.-]*)@)?(?P<host>[A-Za-z0-9._-]+|\[[0-9A-Fa-f:]+\])(?::(?P<port>\d{1,5}))?$"
)
TTL_RE = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
INSTANCE_TYPE_RE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
REGION_RE = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-\d$")

Check = Callable[[Any], Any]


# ---- value checks: each returns the converted value or raises ValueError(reason) ----


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError(f"must be a string, not {type(v).__name__}")
    return v


def _nonempty(v: Any) -> str:
    if not _str(v).strip():
        raise ValueError("must not be empty")
    return v


def _int(lo: int | None = None, hi: int | None = None) -> Callable[[Any], int]:
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"must be an integer, not {type(v).__name__}")
        if lo is not None and v < lo:
            raise ValueError(f"must be >= {lo}, got {v}")
        if hi is not None and v > hi:
            raise ValueError(f"must be <= {hi}, got {v}")
        return v

    return check


def _num(lo: float = 0.0) -> Callable[[Any], float]:
    def check(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"must be a number, not {type(v).__name__}")
        if v < lo:
            raise ValueError(f"must be >= {lo}, got {v}")
        return float(v)

    return check


def _ratio(v: Any) -> float:
    """A share of requests: a fraction 0..1, or a percent string ("1%"). A bare 5 would be
    read as 500 % and pass every run: refused, with both spellings of what was meant."""
    if isinstance(v, str) and v.strip().endswith("%"):
        try:
            pct = float(v.strip()[:-1])
        except ValueError:
            raise ValueError(f'must be a fraction (0.01) or a percent ("1%"), got {v!r}') from None
        if not 0 <= pct <= 100:
            raise ValueError(f"must be between 0% and 100%, got {v!r}")
        return pct / 100.0
    num = _num()(v) if not isinstance(v, str) else None
    if num is None:
        raise ValueError(f'must be a fraction (0.01) or a percent ("1%"), got {v!r}')
    if num > 1:
        raise ValueError(
            f"must be a fraction of 1 or a percent, got {v:g} "
            f'(did you mean "{v:g}%" or {num / 100:g}?)'
        )
    return num


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"must be true or false, not {type(v).__name__}")
    return v


class Spot(Word):
    """[ec2] spot: `false`, `true` (spot, on-demand when AWS has no spot capacity) or
    `"required"` (spot or nothing)."""

    OFF = "off"
    PREFERRED = "preferred"
    REQUIRED = "required"


def _spot(v: Any) -> Spot:
    if v is True or v is False:
        return Spot.PREFERRED if v else Spot.OFF
    if v == "required":
        return Spot.REQUIRED
    raise ValueError(
        'must be true (spot, else on-demand when AWS has no spot capacity), "required" '
        f"(spot only) or false, got {v!r}"
    )


def _str_list(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ValueError("must be a list of strings")
    return tuple(v)


def _choice(*options: str) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if _str(v) not in options:
            hint = difflib.get_close_matches(v, options, n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ValueError(f"must be one of {', '.join(options)}, got {v!r}{extra}")
        return v

    return check


# systemd refuses new logins (pam_nologin) 5 minutes before a scheduled shutdown: a stack
# that powers off sooner than this could not even be bootstrapped or fetched from.
MIN_TTL_S = 10 * 60


def parse_ttl(v: Any) -> int:
    """'4h', '90m', '1h30m', '2d' -> seconds (at most 7 days, at least 10 minutes)."""
    m = TTL_RE.match(_str(v).strip()) if isinstance(v, str) else None
    if not m or not any(m.groups()):
        raise ValueError(f"must be a duration like '4h', '90m' or '1h30m', got {v!r}")
    d, h, mi, s = (int(x or 0) for x in m.groups())
    secs = d * 86400 + h * 3600 + mi * 60 + s
    if not MIN_TTL_S <= secs <= 7 * 86400:
        raise ValueError(
            f"must be between 10m and 7d (systemd refuses new logins 5 minutes before a "
            f"scheduled shutdown), got {v!r}"
        )
    return secs


def parse_host(v: Any) -> tuple[str | None, str, int | None]:
    """'[user@]host[:port]' or an ssh_config alias -> (user, host, port); None where the
    entry does not say (ssh_config may)."""
    m = HOST_RE.match(_str(v).strip()) if isinstance(v, str) else None
    if not m:
        raise ValueError(
            f"must look like 'user@host', 'user@host:port' or an ssh_config alias, got {v!r}"
        )
    port = int(m["port"]) if m["port"] else None
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"port must be 1-65535, got {port}")
    return m["user"], m["host"].strip("[]"), port


def _host(v: Any) -> str:
    parse_host(v)
    return v


def _hosts(v: Any) -> tuple[str, ...]:
    items = _str_list(v)
    for item in items:
        parse_host(item)
    return items


def _cidr(v: Any) -> str:
    try:
        net = ipaddress.ip_network(_str(v), strict=False)
    except ValueError:
        raise ValueError(f"must be a CIDR like '203.0.113.7/32', got {v!r}") from None
    if net.prefixlen == 0:
        raise ValueError(
            "must not be open to the whole internet (0.0.0.0/0 or ::/0): "
            "SSH is only opened to your own address or network"
        )
    return str(net)


def _ami(v: Any) -> str:
    if _str(v) in AMI_ALIASES or re.match(r"^ami-[0-9a-f]{8,17}$", v):
        return v
    hint = difflib.get_close_matches(v, list(AMI_ALIASES), n=1)
    extra = f" (did you mean {hint[0]!r}?)" if hint else ""
    raise ValueError(f"must be one of {', '.join(AMI_ALIASES)} or an 'ami-…' id, got {v!r}{extra}")


def _instance_type(v: Any) -> str:
    if not INSTANCE_TYPE_RE.match(_str(v)):
        raise ValueError(f"must be an instance type like 'c5.large', got {v!r}")
    return v


def _region(v: Any) -> str:
    if not REGION_RE.match(_str(v)):
        raise ValueError(f"must be an AWS region like 'eu-west-1', got {v!r}")
    return v


def check_stack_name(v: Any) -> str:
    if not STACK_NAME_RE.match(_str(v)):
        raise ValueError(
            "must be 1-32 letters, digits, '-' or '_', starting with a letter or "
            f"digit (it becomes AWS tags and names), got {v!r}"
        )
    return v


def _tags(v: Any) -> dict[str, str]:
    if not isinstance(v, dict) or not all(
        isinstance(k, str) and isinstance(x, str) for k, x in v.items()
    ):
        raise ValueError("must be a table of string = string")
    for k in v:
        if k.lower().startswith(("aws:", "swarm:")):
            raise ValueError(f"tag {k!r} uses a reserved prefix (aws: or swarm:)")
    return dict(v)


ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _env(v: Any) -> dict[str, str]:
    """Environment for Locust on every node. Values may be secrets: no message quotes one."""
    if not isinstance(v, dict):
        raise ValueError('must be a table of NAME = "value"')
    for k, x in v.items():
        if not ENV_NAME_RE.match(k):
            raise ValueError(f"name {k!r} is not an environment variable name (A-Z, 0-9, _)")
        if not isinstance(x, str):
            raise ValueError(f"{k} must be a string, not {type(x).__name__}")
        if "\0" in x:
            raise ValueError(f"{k} must not contain a NUL character")
    return dict(v)


def _port(v: Any) -> int:
    return _int(1, 65535)(v)


# ---- the sections ----


def key(check: Check, default: Any = None, *, secret: bool = False) -> Any:
    """A swarm.toml key: its default, and the check its TOML value goes through. A secret
    one is left out of the section's repr (a traceback, a debug line)."""
    meta = {"check": check}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta, repr=not secret)
    return field(default=default, metadata=meta, repr=not secret)


@dataclass(frozen=True)
class StackSection:
    name: str = key(check_stack_name, "default")
    provider: str = key(_choice(*PROVIDERS), "local")


@dataclass(frozen=True)
class BootstrapSection:
    dir: str = key(_nonempty, "bootstrap")
    script: str = key(_nonempty, "bootstrap.sh")
    remote_dir: str = key(_nonempty, "swarm")
    ssh_timeout: int = key(_int(1, 3600), 300)
    # Install Locust from a wheelhouse shipped by swarm, never from the network (private
    # subnets without internet); `wheelhouse`: a prepared one instead of swarm's cache.
    offline: bool = key(_bool, False)
    wheelhouse: str | None = key(_nonempty)


@dataclass(frozen=True)
class LocustSection:
    files_dir: str = key(_nonempty, "locustfiles")
    processes: int = key(_int(-1, 256), -1)
    web_port: int = key(_port, 8089)
    master_port: int = key(_port, 5557)
    extra_args: tuple[str, ...] = key(_str_list, ())  # the master's
    # Locust forwards custom arguments to workers only when a run starts; plugins read them
    # at start-up, so the workers get their own.
    worker_args: tuple[str, ...] = key(_str_list, ())
    # On master and workers; the values are never shown or recorded (run.json names them).
    env: dict[str, str] = key(_env, {}, secret=True)
    # Locust's own --otel on master and workers, this machine's OTEL_* variables passed
    # through as env is; bootstrap installs locust[otel]
    otel: bool = key(_bool, False)


@dataclass(frozen=True)
class LocalSection:
    workers_processes: int = key(_int(1, 64), 1)


@dataclass(frozen=True)
class HostsSection:
    master: str | None = key(_host)
    workers: tuple[str, ...] = key(_hosts, ())
    ssh_key: str | None = key(_nonempty)
    # Read as `ssh -F PATH` would (only that file); default ~/.ssh/config, then the system's.
    ssh_config: str | None = key(_nonempty)


@dataclass(frozen=True)
class Ec2Section:
    region: str | None = key(_region)
    profile: str | None = key(_nonempty)
    ami: str = key(_ami, "ubuntu-24.04")
    master_type: str = key(_instance_type, "c5.large")
    worker_type: str = key(_instance_type, "c5.large")
    subnet_id: str | None = key(_nonempty)
    key_name: str | None = key(_nonempty)
    key_file: str | None = key(_nonempty)
    ssh_user: str | None = key(_nonempty)
    ssh_cidr: str | None = key(_cidr)
    connect: str = key(_choice("public", "private", "bastion", "ssm"), "public")
    bastion: str | None = key(_host)  # connect = "bastion": "user@host[:port]" of the jump host
    public_ip: bool | None = key(_bool)  # None: as connect implies (public_ip_wanted)
    # connect = "ssm": the nodes' instance profile (it must allow AmazonSSMManagedInstanceCore's
    # actions); without it swarm makes one for the stack and `down` removes it.
    instance_profile: str | None = key(_nonempty)
    spot: Spot = key(_spot, Spot.OFF)
    ttl: int = key(parse_ttl, 4 * 3600)
    tags: dict[str, str] = key(_tags, {})

    @property
    def public_ip_wanted(self) -> bool | None:
        """Whether instances get a public IP: connect = "public" needs one, a bastion's
        instances have none unless asked; None: the subnet's own setting (connect =
        "private" and "ssm", where a default subnet's public IP may be the nodes' way to the
        internet, and the SSM agent's to AWS)."""
        if self.public_ip is not None:
            return self.public_ip
        return {"public": True, "bastion": False}.get(self.connect)


@dataclass(frozen=True)
class ChecksSection:
    p95_ms: float | None = key(_num())
    p99_ms: float | None = key(_num())
    avg_ms: float | None = key(_num())
    fail_ratio: float | None = key(_ratio)
    min_rps: float | None = key(_num())


@dataclass(frozen=True)
class Profile:
    name: str
    users: int | None = key(_int(1, 1_000_000))
    spawn_rate: float | None = key(_num(0.001))
    run_time: str | None = key(_nonempty)


SECTIONS: dict[str, type] = {
    "stack": StackSection,
    "bootstrap": BootstrapSection,
    "locust": LocustSection,
    "local": LocalSection,
    "hosts": HostsSection,
    "ec2": Ec2Section,
    "checks": ChecksSection,
}


def keys_of(section: type) -> dict[str, tuple[Check, Any]]:
    """key -> (check, default) of a section (Profile's `name` is not a key)."""
    out: dict[str, tuple[Check, Any]] = {}
    for f in dataclasses.fields(section):
        if "check" in f.metadata:
            default = (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            )
            out[f.name] = (f.metadata["check"], default)
    return out
