"""Where clouds and machines are driven: one Provider per kind (base.py), no Locust knowledge."""

from __future__ import annotations

from swarm.providers.base import Provider, Stack


def get_provider(stack: Stack) -> Provider:
    name = stack.provider
    if name == "local":
        from swarm.providers.local import LocalProvider

        return LocalProvider(stack.config)
    if name == "ec2":
        from swarm.providers.ec2.provider import Ec2Provider

        return Ec2Provider(stack.config)
    if name == "hosts":
        from swarm.providers.hosts import HostsProvider

        return HostsProvider(stack.config)
    raise ValueError(f"unknown provider {name!r}")  # config already rejects this
