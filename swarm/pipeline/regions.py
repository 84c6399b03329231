"""The stack in other regions than the configured one: what `status` and `down` warn about,
and what `--all-regions` looks at (and, for `down`, removes)."""

from __future__ import annotations

from swarm.pipeline.session import Session
from swarm.providers.base import Elsewhere, Stack


def elsewhere(sess: Session, everywhere: bool) -> list[Elsewhere]:
    return sess.provider.other_regions(sess.stack, everywhere)


def session_in(sess: Session, region: str) -> Session:
    """The same stack and reporter, in another region."""
    provider = sess.provider.in_region(region)
    provider.progress = sess.report.info
    return Session(Stack.from_config(provider.config), provider, sess.report)


def warnings(stack: str, found: list[Elsewhere]) -> list[str]:
    """One line per region where the stack is, then `unanswered`'s."""
    advice = "`swarm down --all-regions` or set [ec2] region"
    lines = []
    for e in found:
        if e.instances:
            lines.append(
                f"stack {stack} also has {e.instances} instance(s) in {e.region}: {advice}"
            )
        elif e.local_state and not e.error:
            lines.append(
                f"stack {stack} also has local state in {e.region} (no instances; its key "
                f"pair or security group may be left there): {advice}"
            )
    return lines + unanswered(stack, found)


def unanswered(stack: str, found: list[Elsewhere]) -> list[str]:
    """The regions that could not be asked, in one line (none: no line)."""
    failed = [e for e in found if e.error]
    if not failed:
        return []
    more = ", …" if len(failed) > 5 else ""
    named = ", ".join(f"{e.region} ({e.error})" for e in failed[:5])
    return [f"could not look for stack {stack} in {len(failed)} region(s): {named}{more}"]


def to_clean(found: list[Elsewhere]) -> list[str]:
    """The regions `down --all-regions` goes to: instances or local state there."""
    return [e.region for e in found if e.instances or e.local_state]
