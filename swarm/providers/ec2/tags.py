"""swarm's tags on AWS, the only state swarm keeps there (Ray's tags.py): their names, how a
resource's tags are written and read, and the filters that find a stack's resources."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from swarm.errors import UsageError

STACK = "swarm:stack"
ROLE = "swarm:role"  # master / worker, or STACK_ROLE
CREATED_BY = "swarm:created-by"  # the caller's ARN
CREATED_AT = "swarm:created-at"  # ISO UTC with milliseconds: orders nodes of one second
EXPIRES_AT = "swarm:expires-at"  # when the instance's TTL powers it off
SSH_USER = "swarm:ssh-user"
VCPUS = "swarm:vcpus"  # the instance type's vCPUs: a headless master's worker count, known early
REGION = "swarm:region"  # of the stack's IAM role and instance profile: IAM is global
STACK_ROLE = "stack"  # ROLE of the per-stack security group and key pair
SWARM_TAGS = 8  # Name + the seven above an instance gets, of AWS's 50 per resource

ISO = "%Y-%m-%dT%H:%M:%SZ"
ISO_MS = "%Y-%m-%dT%H:%M:%S.%fZ"


def iso_utc(ts: float, ms: bool = False) -> str:
    """ms=True keeps milliseconds: two launches within one second still have an order."""
    d = datetime.fromtimestamp(ts, timezone.utc)
    return d.strftime(ISO_MS)[:-4] + "Z" if ms else d.strftime(ISO)


def unix_from_iso(iso: str | None) -> float | None:
    for fmt in (ISO, ISO_MS):
        try:
            return datetime.strptime(iso or "", fmt).replace(tzinfo=timezone.utc).timestamp()
        except ValueError:
            continue
    return None


def check_user_tags(user: dict[str, str]) -> None:
    """[ec2] tags must leave room for swarm's own."""
    if len(user) > 50 - SWARM_TAGS or any(len(k) > 128 or len(v) > 256 for k, v in user.items()):
        raise UsageError(
            f"[ec2] tags: at most {50 - SWARM_TAGS} tags (AWS allows 50 per resource, "
            "swarm uses the rest), keys up to 128 and values up to 256 characters"
        )


def stack_tags(
    user: dict[str, str], stack: str, role: str, created_by: str, **extra: str
) -> dict[str, str]:
    """Every tag of a new resource of the stack: the user's, then swarm's, then `extra`
    (keyword names with '_' for '-': expires_at= -> swarm:expires-at)."""
    tags = dict(user)
    tags.update(
        {
            "Name": f"swarm-{stack}" if role == STACK_ROLE else f"swarm-{stack}-{role}",
            STACK: stack,
            ROLE: role,
            CREATED_BY: created_by,
            CREATED_AT: iso_utc(time.time(), ms=True),
        }
    )
    tags.update({f"swarm:{k.replace('_', '-')}": v for k, v in extra.items()})
    return tags


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def tag_dict(resource: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags") or resource.get("TagSet") or []}


def stack_filters(stack: str, role: str | None = None) -> list[dict[str, Any]]:
    filters: list[dict[str, Any]] = [{"Name": f"tag:{STACK}", "Values": [stack]}]
    if role is not None:
        filters.append({"Name": f"tag:{ROLE}", "Values": [role]})
    return filters
