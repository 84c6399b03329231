"""One root error. Every message is a single line naming the thing and the next step.

Third-party exceptions are translated into these at the edge (providers, runners);
only cli.py catches them.
"""
from __future__ import annotations


class SwarmError(Exception):
    """Base of every error swarm reports to the user (exit 1)."""

    exit_code = 1


class UsageError(SwarmError):
    """Bad input detected before anything was launched (exit 2)."""

    exit_code = 2


class ConfigError(UsageError):
    """swarm.toml is malformed, has an unknown key, or a bad value."""


class ProviderError(SwarmError):
    """The provider (EC2, hosts, local) could not do what was asked."""


class RemoteError(SwarmError):
    """A command on one or more nodes failed; carries every host's result."""

    def __init__(self, message: str, results=()):
        super().__init__(message)
        self.results = list(results)


class LocustError(SwarmError):
    """Locust itself failed to start, run, or produce results."""


class CheckFailed(SwarmError):
    """A --check threshold was not met (exit 1, after results are saved)."""
