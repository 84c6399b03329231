"""One root error. Every message is a single line naming the thing and the next step.

Third-party exceptions are translated into these at the edge (providers, runners) and chained
(`raise ... from exc`), so `--debug` shows the library's own error under swarm's; only the CLI
catches them. What a caller may need to decide on travels as fields, never parsed back out of
the message or dug out of `__cause__`:

- `code`: the code of the failure behind it (an AWS error code such as
  `InsufficientInstanceCapacity`, or one of the `SSH_*` codes below), or None;
- `action`: the suggested next step on its own (already part of the message), or None.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from swarm.models import HostResult

# Codes of SSH failures (RemoteError.code).
SSH_UNREACHABLE = "ssh-unreachable"  # no session could be set up (maybe not yet)
SSH_AUTH = "ssh-auth-failed"
SSH_HOST_KEY = "ssh-host-key-changed"
SSH_TIMEOUT = "ssh-timeout"  # a command outlived its timeout


class SwarmError(Exception):
    """Base of every error swarm reports to the user (exit 1)."""

    exit_code = 1

    def __init__(self, message: str, *, code: str | None = None, action: str | None = None):
        super().__init__(message)
        self.code = code
        self.action = action


class RunFailed(SwarmError):
    """A headless run that completed but whose verdict is `fail` (checks, or Locust's
    failures): exit 1, or Locust's own code when only Locust failed."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class Interrupted(SwarmError):
    """Ctrl-C, after swarm has done what it does about it (exit 130)."""

    exit_code = 130


class UsageError(SwarmError):
    """Bad input detected before anything was launched (exit 2)."""

    exit_code = 2


class ConfigError(UsageError):
    """swarm.toml is malformed, has an unknown key, or a bad value."""


class ProviderError(SwarmError):
    """The provider (EC2, hosts, local) could not do what was asked."""


class RemoteError(SwarmError):
    """A command on one or more nodes failed; carries every host's result."""

    def __init__(
        self,
        message: str,
        results: Iterable[HostResult] = (),
        *,
        code: str | None = None,
        action: str | None = None,
    ):
        super().__init__(message, code=code, action=action)
        self.results = list(results)


class LocustError(SwarmError):
    """Locust itself failed to start, run, or produce results."""


class CheckFailed(SwarmError):
    """A --check threshold was not met (exit 1, after results are saved)."""
