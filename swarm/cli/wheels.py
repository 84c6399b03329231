"""`swarm wheelhouse`: fill the offline cache ahead of time, on a machine with an index."""

from __future__ import annotations

import time

import click
from rich.markup import escape

from swarm.cli import render
from swarm.cli.app import cli
from swarm.pipeline import wheelhouse
from swarm.pipeline.session import locust_requirement, locust_version


@cli.command(name="wheelhouse")
@click.option(
    "--for",
    "for_key",
    metavar="TARGET",
    help="The nodes' Python, C library and machine, as `swarm up` names them, e.g. "
    "cp312-glibc-2.39-x86_64 (default: this machine's python3, found as bootstrap does).",
)
@click.option(
    "--otel",
    is_flag=True,
    help="Locust's otel extra too (the OpenTelemetry SDK and exporters): for [locust] otel = true.",
)
def make_wheelhouse(for_key: str | None, otel: bool) -> None:
    """Make (or find) the offline wheelhouse of this swarm's Locust version and print its
    directory: for `[bootstrap] offline = true`, or to copy to a machine without internet and
    name in `[bootstrap] wheelhouse`."""
    version = locust_version()
    target = wheelhouse.parse_target(for_key) if for_key else wheelhouse.this_machine(version)
    started = time.monotonic()
    path, made = wheelhouse.build(version, target, otel)
    took = f" in {time.monotonic() - started:.1f}s" if made else " (cached)"
    what = locust_requirement(version, otel).replace("==", " ")
    render.err.print(escape(f"wheelhouse of {what} for {target.key}{took}"))
    click.echo(str(path))
