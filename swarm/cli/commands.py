"""The commands: parse options, call the pipeline, render what it returns."""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import click

from swarm import config, paths
from swarm.api import bootstrap_failure
from swarm.cli import render
from swarm.cli.app import Ctx, cli, pass_ctx
from swarm.errors import SwarmError, UsageError
from swarm.locust.stats import Summary
from swarm.models import Node, Role
from swarm.pipeline import access, fleet, regions
from swarm.pipeline import logs as node_logs
from swarm.pipeline import status as stack_status
from swarm.remote.base import Sink
from swarm.remote.tunnel import forward


@cli.command()
@click.argument("role", type=click.Choice(["master", "workers"]))
@click.option("-n", "count", type=int, help="Number of workers the stack should have.")
@pass_ctx
def up(c: Ctx, role: str, count: int | None) -> None:
    """Launch and bootstrap the master, or make the stack have exactly N workers."""
    if role == "workers" and count is None:
        raise UsageError(
            "swarm up workers needs -n N (the number of workers the stack should have)"
        )
    if role == "master" and count not in (None, 1):
        raise UsageError("a stack has one master: drop -n")
    stack = c.stack()
    if role == "master":
        result = stack.up_master(strict=False)
    else:
        assert count is not None  # said above
        result = stack.scale_workers(count, strict=False)
    if result.nothing_to_do:
        render.err.print(result.nothing_to_do)
        return
    for n in result.removed:
        render.err.print(f"removed {n.name} ({n.id})")
    if result.bootstrap:
        render.out.print(render.host_results_table("Bootstrap", result.bootstrap))
    elif result.created:
        render.out.print(render.nodes_table("Launched", render.node_rows(result.created)))
    failure = bootstrap_failure(result)
    if failure is not None:
        raise failure


@cli.command()
@pass_ctx
def killall(c: Ctx) -> None:
    """Stop Locust everywhere; keep the machines."""
    results = c.stack().killall()
    ran = [r.node.name for r in results if r.value]
    idle = [r.node.name for r in results if not r.value]
    said = f"stopped Locust on {', '.join(ran)}" if ran else "no Locust test was running"
    if ran and idle:
        said += f"; nothing ran on {', '.join(idle)}"
    render.err.print(f"{said} ({len(results)} node(s); the machines stay up)")


ALL_REGIONS_HELP = "Look for the stack in every region (one API call each, in parallel)."


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--watch", is_flag=True, help="Refresh in place every 2 s until Ctrl-C.")
@click.option("--all-regions", is_flag=True, help=ALL_REGIONS_HELP)
@pass_ctx
def status(c: Ctx, as_json: bool, watch: bool, all_regions: bool) -> None:
    """The stack's nodes, and Locust's live state when it runs."""
    sess = c.session()
    book = sess.provider.price_book()  # one per command: --watch asks AWS for prices once
    found = regions.elsewhere(sess, all_regions)  # once per command too

    def snapshot() -> stack_status.Status:
        return stack_status.snapshot(sess, book, found, all_regions)

    if as_json:
        click.echo(json.dumps(render.status_json(snapshot()), indent=2))
        return
    if not watch:
        render.out.print(render.status_view(snapshot()))
        for line in regions.warnings(sess.stack.name, found):
            sess.report.warn(line)
        return
    for line in regions.warnings(sess.stack.name, found):
        sess.report.warn(line)
    from rich.live import Live

    try:
        with Live(render.status_view(snapshot()), console=render.out, auto_refresh=False) as screen:
            while True:  # until Ctrl-C: a user-driven loop
                time.sleep(2)
                screen.update(render.status_view(snapshot()), refresh=True)
    except KeyboardInterrupt:
        pass  # the normal end of --watch


def _line_writer(name: str | None, lock: threading.Lock) -> Sink:
    """A sink that writes whole lines, each prefixed with the node's name when there are many."""
    pending = bytearray()

    def sink(chunk: bytes) -> None:
        pending.extend(chunk)
        *lines, rest = pending.split(b"\n")
        pending[:] = rest
        if lines:
            text = "".join(
                f"{name + ' | ' if name else ''}{ln.decode(errors='replace')}\n" for ln in lines
            )
            with lock:
                sys.stdout.write(text)
                sys.stdout.flush()

    return sink


@cli.command()
@click.argument("node", default="master")
@click.option("--bootstrap", is_flag=True, help="The bootstrap log instead of Locust's.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until Ctrl-C.")
@pass_ctx
def logs(c: Ctx, node: str, bootstrap: bool, follow: bool) -> None:
    """Print Locust's log (or the bootstrap log) from NODE: master, worker-N or all."""
    sess = c.session()
    chosen = node_logs.pick(sess, node)
    many = len(chosen) > 1
    lock = threading.Lock()

    def sink_for(n: Node) -> Sink:
        return _line_writer(n.name if many else None, lock)

    if not follow:
        for res in node_logs.read(sess, chosen, bootstrap=bootstrap):
            text = res.value if res.ok else f"(unreachable: {res.error})\n"
            sink_for(res.node)((text if text.endswith("\n") else text + "\n").encode())
        return
    try:
        node_logs.follow(sess, chosen, sink_for, bootstrap=bootstrap)
    except KeyboardInterrupt:
        pass  # the normal end of --follow


@cli.command()
@click.option(
    "--port", type=click.IntRange(1, 65535), default=None, help="Local port (default 8089)."
)
@pass_ctx
def ui(c: Ctx, port: int | None) -> None:
    """Reach the master's web UI through an SSH tunnel (holds until Ctrl-C)."""
    sess = c.session()
    here = access.ui_url_here(sess, port)
    if here:
        # Local: the master already listens on this machine's loopback, at that port.
        render.out.print(here)
        render.err.print(
            f"{sess.stack.provider} provider: the web UI already listens on this machine at "
            f"{here}: no tunnel needed (--port N forwards another port to it)"
        )
        return
    tunnel = access.open_ui(sess, port)
    stop = threading.Event()
    render.out.print(tunnel.url, soft_wrap=True)
    render.err.print(f"forwarding {tunnel.url} to the master's web UI; Ctrl-C to close")
    try:
        forward(tunnel.runner, tunnel.listener, tunnel.web_port, stop, render.err.print)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        tunnel.close()


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("node")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@pass_ctx
def ssh(c: Ctx, node: str, command: tuple[str, ...]) -> None:
    """Open a shell on NODE, or run one command: swarm ssh worker-1 -- uptime"""
    argv = access.ssh_argv(c.session(), node, [a for a in command if a != "--"])
    os.execvp("ssh", argv)


@cli.command()
@click.argument("role", required=False, type=click.Choice(["workers"]))
@click.option("--all-regions", is_flag=True, help=ALL_REGIONS_HELP + " Cleans each one.")
@pass_ctx
def down(c: Ctx, role: str | None, all_regions: bool) -> None:
    """Terminate everything this stack created (or only its workers)."""
    stack = c.stack()
    sess = stack.session
    here = stack.down(workers_only=bool(role))
    which = Role.WORKER if role else None
    _print_down(here)
    # Nothing here: the stack may well be in another region (every region is asked then).
    found = regions.elsewhere(sess, all_regions or bool(here.nothing_to_do))
    if not all_regions:
        for line in regions.warnings(sess.stack.name, found):
            sess.report.warn(line)
        return
    for region in regions.to_clean(found):
        sess.report.info(f"stack {sess.stack.name!r} in {region}:")
        _print_down(fleet.down(regions.session_in(sess, region), which))
    for line in regions.unanswered(sess.stack.name, found):
        sess.report.warn(line)


def _print_down(result: fleet.DownResult) -> None:
    if result.nothing_to_do:
        render.err.print(result.nothing_to_do)
        return
    render.err.print(
        f"removed {len(result.removed)} node(s): {', '.join(n.name for n in result.removed)}"
    )


@cli.command()
def init() -> None:
    """Write ./swarm.toml from the documented example, and locustfiles/ and bootstrap/ where
    missing (never overwrites)."""
    target = Path("swarm.toml")
    if target.exists():
        raise SwarmError("swarm.toml already exists here; not overwriting it")
    shutil.copyfile(config.example_path(), target)
    wrote = ["swarm.toml (every key documented)"]
    for name in ("locustfiles", "bootstrap"):
        if not Path(name).exists():
            shutil.copytree(
                paths.scaffold_dir() / name, name, ignore=shutil.ignore_patterns("__pycache__")
            )
            files = sorted(p.name for p in Path(name).iterdir())
            wrote.append(f"{name}/ ({', '.join(files)})")
    render.err.print(f"wrote {'; '.join(wrote)}")
    render.err.print(
        "next:\n"
        "  python -m swarm.demo.target --port 8080     # a demo target API, in another terminal\n"
        "  swarm up master && swarm up workers -n 2\n"
        "  swarm run -H http://127.0.0.1:8080 -f viral_load.py --headless -u 20 -t 30s"
    )


@cli.command()
@click.option(
    "-t", "--run-time", help="How long the demo load runs (15s; with --ws the light profile's)."
)
@click.option(
    "--ws",
    is_flag=True,
    help="The WebSocket scenario: ws_chat.py with [profiles.light], against chat rooms.",
)
def demo(run_time: str | None, ws: bool) -> None:
    """A full local cycle against a built-in target: up, run, summary, down."""
    from swarm.demo.cycle import run_demo

    got = run_demo(render.ConsoleReporter(), run_time, ws)
    render.out.print(render.nodes_table(f"stack {got.stack} (local)", render.node_rows(got.nodes)))
    summary = got.run.summary
    assert summary is not None  # a run without statistics raised already
    render.out.print(render.summary_table(summary))
    total = summary.total
    render.err.print(f"results: {got.run.results_dir}")
    if ws:
        render.err.print(_ws_demo_line(got.counts, summary, got.run.workers_expected))
        for ch in got.run.checks:
            render.err.print(render.check_line(ch.check, ch.ok, ch.ambiguous, ch.says))
    else:
        render.err.print(
            f"the target served {got.served} requests; Locust counted {total.requests} "
            f"with {total.failures} failures across {got.run.workers_expected} workers"
        )
    if not (total.requests > 0 and total.failures == 0) or got.run.judgement.exit_code:
        raise SystemExit(1)


def _ws_demo_line(counts: dict[str, int], summary: Summary, workers: int) -> str:
    from swarm.demo import ws

    def seen(what: str) -> int:
        return counts.get(f"{ws.WS_PREFIX}{what} {ws.ROOM}", 0)

    locust = {e.name: e.requests for e in summary.endpoints}
    return (
        f"the target accepted {seen('open')} WebSocket connections, received {seen('recv')} "
        f"messages and sent {seen('sent')} to room members; Locust counted "
        f"{locust.get('WS connect', 0)} WS connect, {locust.get('WS rtt', 0)} WS rtt and "
        f"{locust.get('WS recv', 0)} WS recv with {summary.total.failures} failures across "
        f"{workers} workers"
    )
