"""`swarm extend DURATION`: the stack powers off DURATION from now (every node, every tag)."""

from __future__ import annotations

import time

import click
from rich.markup import escape
from rich.table import Table

from swarm.cli import render
from swarm.cli.app import Ctx, cli, pass_ctx
from swarm.errors import SwarmError
from swarm.pipeline import expiry


@cli.command()
@click.argument("duration")
@pass_ctx
def extend(c: Ctx, duration: str) -> None:
    """Make the stack power off DURATION from now (e.g. 2h, 90m; 10m to 7d), on every node.

    DURATION counts from now, not from the old expiry: `swarm extend 2h` leaves the stack
    2 hours (it can also bring the power-off closer). EC2 only: local and hosts nodes never
    power off.
    """
    seconds = expiry.parse_extension(duration)  # before the session: bad input touches nothing
    sess = c.session()
    got = expiry.extend(sess, seconds)
    t = Table(title="Extend", title_justify="left")
    for col in ("node", "id", "powers off"):
        t.add_column(col)
    for r in got.results:
        when = r.value.at if r.ok and r.value.at else got.expires_at
        t.add_row(
            r.node.name,
            r.node.id,
            expiry.at_text(when, with_date=True)
            if r.ok
            else f"[red]unreachable[/red]: {escape(r.error)}",
        )
    render.out.print(t)
    if got.now is not None:
        was = f"; was {expiry.at_text(got.was)}" if got.was else ""
        render.err.print(
            f"stack {sess.stack.name} powers off at {expiry.at_text(got.now, with_date=True)} "
            f"(in {expiry.left_text(got.now - time.time())}{was})"
        )
    if got.failed:
        names = ", ".join(r.node.name for r in got.failed)
        raise SwarmError(
            f"extend failed on {len(got.failed)} of {len(got.results)} node(s) ({names}): "
            f"their power-off and tag are unchanged; run `swarm extend {duration}` again "
            "once they answer"
        )
