"""A host as the user names it (an ssh_config alias, `user@host:port`) -> where swarm connects.

fabric reads the ssh_config files and applies their Host and Match blocks (HostName, User,
Port, IdentityFile, ProxyJump, ProxyCommand) with paramiko's parser, as OpenSSH would. The
hops of a ProxyJump chain are put in order here: fabric's own gateways connect a chain of
two or more in reverse (fabric#2203), and open their channels with no timeout; swarm opens
every hop itself (hops.py), pinned and bounded.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from pathlib import Path

import fabric
import invoke
import paramiko.config

from swarm.errors import ConfigError, UsageError
from swarm.remote.base import DIRECT, Hop, Route

# `Match exec` runs its command with invoke, which paramiko was imported without (see
# swarm/remote/__init__.py): fabric has it now.
if getattr(paramiko.config, "invoke", invoke) is None:
    paramiko.config.invoke = invoke

# A chain that long is a loop in the config (a Host * block jumping through itself).
MAX_HOPS = 10
DEFAULT_FILES = ("~/.ssh/config", "/etc/ssh/ssh_config")


@dataclass(frozen=True)
class Resolved:
    """A node's own login (HostName, Port, User, IdentityFile) and the way to it."""

    hop: Hop
    route: Route = DIRECT
    user_named: bool = True  # by the address or the file (else: this machine's login name)

    def require_user(self, what: str, address: str) -> Resolved:
        """Itself, if the address or the ssh_config names its user: a bare name is more
        often a typo than a wish to log in as this machine's user."""
        if not self.user_named:  # a swarm.toml value ssh_config does not complete
            raise ConfigError(
                f"{what}: {address!r} names no user and the ssh_config gives it none: "
                "write it as 'user@host' or give its Host block a User"
            )
        return self


class SshConfig:
    """The ssh_config files swarm reads: one named file (as `ssh -F`), or the user's and
    the system's."""

    def __init__(self, path: Path | None = None):
        self.path = path
        if path is not None and not path.is_file():
            raise UsageError(f"ssh_config file {path} not found: fix [hosts] ssh_config")
        try:
            # lazy: only the ssh_config files, not fabric's own YAML config files.
            self._config = fabric.Config(
                lazy=True,
                runtime_ssh_path=str(path) if path is not None else None,
                user_ssh_path=DEFAULT_FILES[0],
                system_ssh_path=DEFAULT_FILES[1],
            )
            self._config.load_ssh_config()
        except Exception as e:  # paramiko's parser: a malformed line
            where = path or " or ".join(DEFAULT_FILES)
            raise UsageError(f"cannot read ssh_config {where}: {e}") from e

    def resolve(self, address: str, default_user: str | None = None) -> Resolved:
        """`address`: an alias or `[user@]host[:port]`; what it says wins over the file, as
        on OpenSSH's command line."""
        return self._resolve(address, default_user, depth=0)

    def _hop(self, address: str, default_user: str | None) -> tuple[Hop, dict[str, str]]:
        """The login at `address`, and its ssh_config entries (user, proxyjump, ...)."""
        # A connect_kwargs of its own: without one, fabric adds each host's IdentityFile to
        # the shared config's, and every later host would offer them all.
        conn = fabric.Connection(
            address, config=self._config, gateway=False, connect_kwargs={"key_filename": []}
        )
        # fabric's default user is this machine's login name, as OpenSSH's; a provider's
        # default (the AMI's user) comes first when the file says nothing.
        user = conn.user
        if default_user and "user" not in conn.ssh_config and "@" not in address:
            user = default_user
        keys = tuple(
            Path(os.path.expanduser(k)) for k in conn.connect_kwargs.get("key_filename", ())
        )
        return Hop(conn.host, int(conn.port), user or getpass.getuser(), keys), conn.ssh_config

    def _resolve(self, address: str, default_user: str | None, depth: int) -> Resolved:
        if depth > MAX_HOPS:
            raise UsageError(
                f"ssh_config: more than {MAX_HOPS} ProxyJump hops to reach {address}: "
                "is a Host block jumping through itself?"
            )
        hop, found = self._hop(address, default_user)
        named = "@" in address or "user" in found or bool(default_user)
        jump = found.get("proxyjump", "none").strip()
        if jump.lower() != "none":
            jumps: list[Hop] = []
            for i, name in enumerate(j.strip() for j in jump.split(",") if j.strip()):
                if i == 0:
                    # The first jump host is reached as `ssh` would reach it: its own
                    # ProxyJump (a chain declared host by host) comes before it.
                    first = self._resolve(name, None, depth + 1)
                    if first.route.proxy_command is not None:
                        raise UsageError(
                            f"ssh_config: jump host {name} uses a ProxyCommand: swarm "
                            "cannot chain a ProxyJump after a ProxyCommand"
                        )
                    jumps += [*first.route.jumps, first.hop]
                else:
                    jumps.append(self._hop(name, None)[0])
            if len(jumps) > MAX_HOPS:
                raise UsageError(f"ssh_config: more than {MAX_HOPS} ProxyJump hops to {address}")
            return Resolved(hop, Route(jumps=tuple(jumps)), named)
        command = found.get("proxycommand", "none").strip()
        if command.lower() != "none":
            return Resolved(hop, Route(proxy_command=command), named)
        return Resolved(hop, DIRECT, named)
