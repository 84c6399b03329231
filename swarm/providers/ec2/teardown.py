"""What `down` removes last: the stack's security group, which AWS keeps busy for a while."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from swarm.errors import ProviderError
from swarm.providers.ec2.aws import retry_while
from swarm.providers.ec2.errors import error_code


def delete_group(
    ec2: Any, stack: str, gid: str, timeout: float, progress: Callable[[str], None]
) -> None:
    """Delete the group, retrying (bounded) while the terminated instances' network
    interfaces still hold it (DependencyViolation); `progress` hears of it every 30 s."""
    said = -1.0

    def waiting(code: str, waited: float) -> None:
        nonlocal said
        if said < 0 or waited - said >= 30:
            said = waited
            progress(
                f"security group {gid} is still held by the terminated instances' "
                f"network interfaces ({code}); retrying for up to {timeout / 60:.0f} min"
            )

    try:
        retry_while(
            lambda: ec2.delete_security_group(GroupId=gid),
            frozenset({"DependencyViolation"}),
            timeout,
            waiting,
        )
    except Exception as exc:
        if error_code(exc) != "DependencyViolation":
            raise
        raise ProviderError(
            f"security group {gid} of stack {stack} is still in use {timeout:.0f}s after its "
            "instances were terminated (AWS frees it with their network interfaces): it is "
            "all that is left; `swarm down` again in a few minutes removes it",
            code="DependencyViolation",
            action="run `swarm down` again in a few minutes",
        ) from exc
