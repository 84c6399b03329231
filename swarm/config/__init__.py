"""swarm.toml into frozen, typed dataclasses (the keys themselves are in `schema`).

Anything not declared there is rejected with the file, the line and a "did you mean".
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

from swarm.config.schema import (
    SECTIONS,
    BootstrapSection,
    ChecksSection,
    Ec2Section,
    HostsSection,
    LocalSection,
    LocustSection,
    Profile,
    StackSection,
    check_stack_name,
    keys_of,
    parse_host,
)
from swarm.errors import ConfigError, UsageError

__all__ = ["Config", "Profile", "load", "parse", "parse_host", "example_path"]

Where = Callable[[str | None, str | None], str]


@dataclass(frozen=True)
class Config:
    stack: StackSection = field(default_factory=StackSection)
    bootstrap: BootstrapSection = field(default_factory=BootstrapSection)
    locust: LocustSection = field(default_factory=LocustSection)
    local: LocalSection = field(default_factory=LocalSection)
    hosts: HostsSection = field(default_factory=HostsSection)
    ec2: Ec2Section = field(default_factory=Ec2Section)
    checks: ChecksSection = field(default_factory=ChecksSection)
    profiles: dict[str, Profile] = field(default_factory=dict)
    path: Path | None = None  # the file read, if any
    base_dir: Path = Path(".")  # relative paths in the file resolve against this

    def resolve(self, p: str | os.PathLike[str]) -> Path:
        path = Path(os.path.expanduser(str(p)))
        return path if path.is_absolute() else self.base_dir / path

    def with_stack_name(self, name: str) -> Config:
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


def _did_you_mean(word: str, options: Iterable[str]) -> str:
    hint = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {hint[0]!r}?)" if hint else ""


def _where(path: Path | None, text: str, section: str | None, key: str | None) -> str:
    if path is None:
        return ""
    line = _line_of(text, section, key)
    return f"{path}:{line}: " if line else f"{path}: "


def _section(name: str, raw: Any, section: type, where: Where) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where(name, None)}[{name}] must be a table")
    spec = keys_of(section)
    out = {k: default for k, (_, default) in spec.items()}
    for key, value in raw.items():
        if key not in spec:
            raise ConfigError(
                f"{where(name, key)}unknown key {key!r} in [{name}]{_did_you_mean(key, spec)}"
            )
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
    return parse_data(data, path, base_dir, text)


def parse_data(
    data: Mapping[str, Any],
    path: Path | None = None,
    base_dir: Path | None = None,
    text: str = "",
) -> Config:
    """The tables swarm.toml holds, as tomllib gives them (swarm.Stack's dict form): checked
    by the same code as the file, so the same errors (without a line to point at)."""

    def where(section: str | None, key: str | None) -> str:
        return _where(path, text, section, key)

    sections: dict[str, Any] = {}
    profiles: dict[str, Profile] = {}
    for name, raw in data.items():
        if name == "profiles":
            if not isinstance(raw, dict):
                raise ConfigError(
                    f"{where(name, None)}[profiles] must hold tables like [profiles.light]"
                )
            for pname, praw in raw.items():
                profiles[pname] = Profile(
                    pname, **_section(f"profiles.{pname}", praw, Profile, where)
                )
            continue
        if name not in SECTIONS:
            raise ConfigError(
                f"{where(name, None)}unknown section [{name}]"
                f"{_did_you_mean(name, [*SECTIONS, 'profiles'])}"
            )
        sections[name] = SECTIONS[name](**_section(name, raw, SECTIONS[name], where))
    cfg = Config(
        **sections,
        profiles=profiles,
        path=path,
        base_dir=base_dir or (path.parent if path else Path.cwd()),
    )
    _cross_checks(cfg, where)
    return cfg


def _cross_checks(cfg: Config, where: Where) -> None:
    if cfg.locust.web_port == cfg.locust.master_port:
        raise ConfigError(
            f"{where('locust', 'web_port')}[locust] web_port and master_port must differ"
        )
    if cfg.stack.provider == "hosts" and not cfg.hosts.master:
        raise ConfigError(
            f"{where('hosts', None)}provider 'hosts' needs [hosts] master = \"user@host\""
        )
    if cfg.bootstrap.wheelhouse and not cfg.bootstrap.offline:
        raise ConfigError(
            f"{where('bootstrap', 'wheelhouse')}[bootstrap] wheelhouse is only used with "
            "offline = true: set it too, or drop wheelhouse"
        )
    if cfg.ec2.connect != "ssm":
        if cfg.ec2.instance_profile:
            raise ConfigError(
                f"{where('ec2', 'instance_profile')}[ec2] instance_profile is only used with "
                'connect = "ssm": set it too, or drop instance_profile'
            )
    elif cfg.ec2.ssh_cidr:
        raise ConfigError(
            f'{where("ec2", "ssh_cidr")}[ec2] ssh_cidr is not used with connect = "ssm" '
            "(no SSH ingress at all: SSH goes through Session Manager): drop ssh_cidr"
        )
    _bastion_checks(cfg, where)
    if bool(cfg.ec2.key_name) != bool(cfg.ec2.key_file):
        raise ConfigError(
            f"{where('ec2', 'key_name' if cfg.ec2.key_name else 'key_file')}"
            "[ec2] key_name and key_file go together (or leave both out and swarm "
            "makes a key pair)"
        )


def _bastion_checks(cfg: Config, where: Where) -> None:
    ec2 = cfg.ec2
    if ec2.connect == "bastion" and not ec2.bastion:
        raise ConfigError(
            f'{where("ec2", "connect")}[ec2] connect = "bastion" needs [ec2] bastion = '
            '"user@host[:port]" (the host swarm reaches the instances through)'
        )
    if ec2.bastion and ec2.connect != "bastion":
        raise ConfigError(
            f'{where("ec2", "bastion")}[ec2] bastion is only used with connect = "bastion": '
            "set it too, or drop bastion"
        )
    if ec2.connect == "public" and ec2.public_ip is False:
        raise ConfigError(
            f'{where("ec2", "public_ip")}[ec2] public_ip = false leaves connect = "public" '
            'nothing to reach: use connect = "bastion" or "private"'
        )


def load(path: str | os.PathLike[str] | None = None, stack: str | None = None) -> Config:
    """Read `path`, or ./swarm.toml if present, or defaults; apply --stack / SWARM_STACK."""
    p: Path | None
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
    return named(cfg, stack)


def named(cfg: Config, stack: str | None = None) -> Config:
    """--stack NAME, else $SWARM_STACK, over [stack] name."""
    name = stack or os.environ.get("SWARM_STACK")
    if name:
        try:
            check_stack_name(name)
        except ValueError as e:
            raise UsageError(f"--stack {e}") from None
        cfg = cfg.with_stack_name(name)
    return cfg


def example_path() -> Path:
    return Path(__file__).parent.parent / "data" / "swarm.toml.example"
