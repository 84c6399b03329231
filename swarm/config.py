"""swarm.toml into frozen dataclasses.

Every key is declared once in SCHEMA with its type and check; anything else is rejected
with the file, the line and a "did you mean".
"""
from __future__ import annotations

import difflib
import ipaddress
import os
import re
import sys
from dataclasses import dataclass, field, make_dataclass, replace
from pathlib import Path
from typing import Any, Callable

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

from swarm.errors import ConfigError, UsageError

PROVIDERS = ("local", "hosts", "ec2")
AMI_ALIASES = {"ubuntu-22.04": "ubuntu", "ubuntu-24.04": "ubuntu", "al2023": "ec2-user"}
STACK_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
HOST_RE = re.compile(r"^(?P<user>[A-Za-z_][A-Za-z0-9_.-]*)@(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\])(?::(?P<port>\d{1,5}))?$")
TTL_RE = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
INSTANCE_TYPE_RE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
REGION_RE = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-\d$")


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


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"must be true or false, not {type(v).__name__}")
    return v


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


def parse_ttl(v: Any) -> int:
    """'4h', '90m', '1h30m', '2d' -> seconds (at most 7 days, at least one minute)."""
    m = TTL_RE.match(_str(v).strip()) if isinstance(v, str) else None
    if not m or not any(m.groups()):
        raise ValueError(f"must be a duration like '4h', '90m' or '1h30m', got {v!r}")
    d, h, mi, s = (int(x or 0) for x in m.groups())
    secs = d * 86400 + h * 3600 + mi * 60 + s
    if not 60 <= secs <= 7 * 86400:
        raise ValueError(f"must be between 1m and 7d, got {v!r}")
    return secs


def parse_host(v: Any) -> tuple[str, str, int]:
    """'user@host[:port]' -> (user, host, port)."""
    m = HOST_RE.match(_str(v).strip()) if isinstance(v, str) else None
    if not m:
        raise ValueError(f"must look like 'user@host' or 'user@host:port', got {v!r}")
    port = int(m["port"] or 22)
    if not 1 <= port <= 65535:
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
        raise ValueError("must not be open to the whole internet (0.0.0.0/0 or ::/0): "
                         "SSH is only opened to your own address or network")
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


def _stack_name(v: Any) -> str:
    if not STACK_NAME_RE.match(_str(v)):
        raise ValueError("must be 1-32 letters, digits, '-' or '_', starting with a letter or "
                         f"digit (it becomes AWS tags and names), got {v!r}")
    return v


def _tags(v: Any) -> dict[str, str]:
    if not isinstance(v, dict) or not all(isinstance(k, str) and isinstance(x, str) for k, x in v.items()):
        raise ValueError("must be a table of string = string")
    for k in v:
        if k.lower().startswith(("aws:", "swarm:")):
            raise ValueError(f"tag {k!r} uses a reserved prefix (aws: or swarm:)")
    return dict(v)


def _port(v: Any) -> int:
    return _int(1, 65535)(v)


# ---- the schema: section -> key -> (check, default) ----

SCHEMA: dict[str, dict[str, tuple[Callable[[Any], Any], Any]]] = {
    "stack": {"name": (_stack_name, "default"), "provider": (_choice(*PROVIDERS), "local")},
    "bootstrap": {"dir": (_nonempty, "bootstrap"), "script": (_nonempty, "bootstrap.sh"),
                  "remote_dir": (_nonempty, "swarm"), "ssh_timeout": (_int(1, 3600), 300)},
    "locust": {"files_dir": (_nonempty, "locustfiles"), "processes": (_int(-1, 256), -1),
               "web_port": (_port, 8089), "master_port": (_port, 5557),
               "extra_args": (_str_list, ())},
    "local": {"workers_processes": (_int(1, 64), 1)},
    "hosts": {"master": (_host, None), "workers": (_hosts, ()), "ssh_key": (_nonempty, None)},
    "ec2": {"region": (_region, None), "profile": (_nonempty, None), "ami": (_ami, "ubuntu-24.04"),
            "master_type": (_instance_type, "c5.large"), "worker_type": (_instance_type, "c5.large"),
            "subnet_id": (_nonempty, None), "key_name": (_nonempty, None),
            "key_file": (_nonempty, None), "ssh_user": (_nonempty, None), "ssh_cidr": (_cidr, None),
            "connect": (_choice("public", "private"), "public"), "spot": (_bool, False),
            "ttl": (parse_ttl, 4 * 3600), "tags": (_tags, {})},
    "checks": {"p95_ms": (_num(), None), "p99_ms": (_num(), None), "avg_ms": (_num(), None),
               "fail_ratio": (_num(), None), "min_rps": (_num(), None)},
}
PROFILE_KEYS: dict[str, tuple[Callable[[Any], Any], Any]] = {
    "users": (_int(1, 1_000_000), None), "spawn_rate": (_num(0.001), None),
    "run_time": (_nonempty, None),
}


def _section_class(name: str, spec) -> type:
    fields = []
    for key, (_, default) in spec.items():
        if isinstance(default, (dict, list)):
            fields.append((key, Any, field(default_factory=lambda d=default: type(d)(d))))
        else:
            fields.append((key, Any, field(default=default)))
    return make_dataclass(f"{name.title()}Config", fields, frozen=True)


# One frozen dataclass per section, generated from SCHEMA so each key is declared once.
SECTIONS: dict[str, type] = {name: _section_class(name, spec) for name, spec in SCHEMA.items()}


@dataclass(frozen=True)
class Profile:
    name: str
    users: int | None = None
    spawn_rate: float | None = None
    run_time: str | None = None


@dataclass(frozen=True)
class Config:
    stack: Any
    bootstrap: Any
    locust: Any
    local: Any
    hosts: Any
    ec2: Any
    checks: Any
    profiles: dict[str, Profile] = field(default_factory=dict)
    path: Path | None = None       # the file read, if any
    base_dir: Path = Path(".")     # relative paths in the file resolve against this

    def resolve(self, p: str | os.PathLike) -> Path:
        path = Path(os.path.expanduser(str(p)))
        return path if path.is_absolute() else self.base_dir / path

    def with_stack_name(self, name: str) -> "Config":
        return replace(self, stack=replace(self.stack, name=name))


def _line_of(text: str, section: str | None, key: str | None) -> int | None:
    """Best-effort line number of `key` inside `[section]` (tomllib gives none)."""
    current = None
    for no, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        m = re.match(r"^\[\s*([^\]]+?)\s*\]", s)
        if m:
            current = m.group(1).replace('"', "").replace("'", "")
            if key is None and current == section:
                return no
            continue
        if key is not None and current == section and re.match(rf"^{re.escape(key)}\s*=", s):
            return no
    return None


def _did_you_mean(word: str, options) -> str:
    hint = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {hint[0]!r}?)" if hint else ""


def _where(path: Path | None, text: str, section: str | None, key: str | None) -> str:
    if path is None:
        return ""
    line = _line_of(text, section, key)
    return f"{path}:{line}: " if line else f"{path}: "


def _section(name: str, raw: Any, spec, where) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where(name, None)}[{name}] must be a table")
    out = {k: default for k, (_, default) in spec.items()}
    for key, value in raw.items():
        if key not in spec:
            raise ConfigError(f"{where(name, key)}unknown key {key!r} in [{name}]"
                              f"{_did_you_mean(key, spec)}")
        check, _ = spec[key]
        try:
            out[key] = check(value)
        except ValueError as e:
            raise ConfigError(f"{where(name, key)}[{name}] {key} {e}") from None
    return out


def parse(text: str, path: Path | None = None, base_dir: Path | None = None) -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path or 'config'}: not valid TOML: {e}") from None

    def where(section, key):
        return _where(path, text, section, key)

    sections: dict[str, dict[str, Any]] = {}
    profiles: dict[str, Profile] = {}
    for name, raw in data.items():
        if name == "profiles":
            if not isinstance(raw, dict):
                raise ConfigError(f"{where(name, None)}[profiles] must hold tables like [profiles.light]")
            for pname, praw in raw.items():
                values = _section(f"profiles.{pname}", praw, PROFILE_KEYS, where)
                profiles[pname] = Profile(pname, **values)
            continue
        if name not in SCHEMA:
            raise ConfigError(f"{where(name, None)}unknown section [{name}]"
                              f"{_did_you_mean(name, [*SCHEMA, 'profiles'])}")
        sections[name] = _section(name, raw, SCHEMA[name], where)
    cfg = Config(**{k: SECTIONS[k](**sections.get(k, {})) for k in SCHEMA}, profiles=profiles, path=path,
                 base_dir=base_dir or (path.parent if path else Path.cwd()))
    _cross_checks(cfg, where)
    return cfg


def _cross_checks(cfg: Config, where) -> None:
    if cfg.locust.web_port == cfg.locust.master_port:
        raise ConfigError(f"{where('locust', 'web_port')}[locust] web_port and master_port must differ")
    if cfg.stack.provider == "hosts" and not cfg.hosts.master:
        raise ConfigError(f"{where('hosts', None)}provider 'hosts' needs [hosts] master = \"user@host\"")
    if bool(cfg.ec2.key_name) != bool(cfg.ec2.key_file):
        raise ConfigError(f"{where('ec2', 'key_name' if cfg.ec2.key_name else 'key_file')}"
                          "[ec2] key_name and key_file go together (or leave both out and swarm "
                          "makes a key pair)")


def load(path: str | os.PathLike | None = None, stack: str | None = None) -> Config:
    """Read `path`, or ./swarm.toml if present, or defaults; apply --stack / SWARM_STACK."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} not found")
    else:
        p = Path("swarm.toml")
        p = p if p.is_file() else None
    if p is not None:
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read {p}: {e}") from None
        cfg = parse(text, p.resolve(), p.resolve().parent)
    else:
        cfg = parse("", None, Path.cwd())
    name = stack or os.environ.get("SWARM_STACK")
    if name:
        try:
            _stack_name(name)
        except ValueError as e:
            raise UsageError(f"--stack {e}") from None
        cfg = cfg.with_stack_name(name)
    return cfg


def example_path() -> Path:
    return Path(__file__).parent / "data" / "swarm.toml.example"
