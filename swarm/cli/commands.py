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
from rich.markup import escape

from swarm import config, paths
from swarm.api import bootstrap_failure
from swarm.cli import ci, render
from swarm.cli.app import Ctx, cli, pass_ctx
from swarm.errors import Interrupted, RunFailed, SwarmError, UsageError
from swarm.locust.stats import Summary
from swarm.models import Node, Role
from swarm.pipeline import access, fleet, regions
from swarm.pipeline import logs as node_logs
from swarm.pipeline import status as stack_status
from swarm.pipeline.judge import Verdict
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


@cli.command(context_settings={"ignore_unknown_options": True})
@click.option(
    "-H", "--host", required=True, help="Target base URL, e.g. https://staging.example.com"
)
@click.option("-f", "--locustfile", required=True, help="File in [locust] files_dir, or a path.")
@click.option("-u", "--users", type=click.IntRange(min=1), help="Peak number of users.")
@click.option(
    "-r",
    "--spawn-rate",
    type=click.FloatRange(min=0, min_open=True),
    help="Users started per second.",
)
@click.option("-t", "--run-time", help="Stop after this long, e.g. 30s, 5m, 1h30m.")
@click.option("--headless", is_flag=True, help="No UI: run, wait, fetch results, print a summary.")
@click.option(
    "--profile", help="A [profiles.NAME]: users / spawn_rate / run_time, its checks and env."
)
@click.option(
    "--check",
    "checks",
    multiple=True,
    metavar="EXPR",
    help="Fail (exit 1) unless it holds: p95<200ms, p99<1s, avg<100ms, max<2s, fail_ratio<1%, "
    "success>99%, rps>50, cpu<90%; of one stats entry: p95[WS rtt]<200ms, p95[GET /items]<1s; "
    "against --baseline: p95<+10%, rps>-5%.",
)
@click.option(
    "--baseline",
    metavar="prev|last|RUN",
    help="The past run that relative checks (p95<+10%) compare with: prev = this stack's "
    "newest run that passed, last = its newest run with statistics whatever its verdict, or a "
    "run id, prefix or path. Refuses a run with another locustfile, users, run time, host or "
    "worker count.",
)
@click.option(
    "--baseline-anyway", is_flag=True, help="Compare with a baseline that is not comparable."
)
@click.option(
    "--junit",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Write a JUnit XML report: each check a test case, and the run itself.",
)
@click.option(
    "--require-all", is_flag=True, help="Refuse to start unless every worker is reachable."
)
@click.argument("extra", nargs=-1, type=click.UNPROCESSED)
@pass_ctx
def run(
    c: Ctx,
    host: str,
    locustfile: str,
    users: int | None,
    spawn_rate: float | None,
    run_time: str | None,
    headless: bool,
    profile: str | None,
    checks: tuple[str, ...],
    baseline: str | None,
    baseline_anyway: bool,
    junit: Path | None,
    require_all: bool,
    extra: tuple[str, ...],
) -> None:
    """(Re)start Locust on every node: master, then one worker process per core."""
    if junit is not None and not headless:
        raise UsageError("--junit reports a headless run: add --headless and -t")
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY") if headless else None

    def report(r: ci.Report) -> None:
        for line in ci.write(r, junit, step_summary):
            render.err.print(f"[yellow]![/yellow] {escape(line)}")

    try:
        stack = c.stack()
        sess = stack.session
        outcome = stack.run(
            host,
            locustfile,
            users=users,
            spawn_rate=spawn_rate,
            run_time=run_time,
            headless=headless,
            profile=profile,
            checks=checks,
            extra_args=[a for a in extra if a != "--"],
            require_all=require_all,
            baseline=baseline,
            baseline_anyway=baseline_anyway,
        ).outcome
    except SwarmError as e:
        if headless:
            try:
                report(ci.Report.error(_stack_name(c), str(e), checks))
            except SwarmError as unwritten:  # the run's own error is the one to end with
                render.err.print(f"[yellow]![/yellow] {escape(str(unwritten))}")
        raise
    if not headless:
        render.err.print(
            f"Locust runs on stack {sess.stack.name!r}: open the web UI with "
            "`swarm ui`; stop it with `swarm killall`"
        )
        return
    if outcome.summary:
        render.out.print(render.summary_table(outcome.summary))
    if outcome.failures:
        render.out.print(render.failures_table(outcome.failures))
    if outcome.raised:
        render.out.print(render.raised_table(outcome.raised))
    hot_workers = {k: v for k, v in outcome.saturated.items() if k != "master"}
    if hot_workers:
        hot = ", ".join(f"{name} ({cpu:.0f}%)" for name, cpu in sorted(hot_workers.items()))
        n_workers = len(sess.nodes(Role.WORKER))
        more = max(n_workers + 1, n_workers * 2)
        render.err.print(
            f"[yellow]![/yellow] saturated: {hot} above 90% CPU: the swarm itself may "
            f"be the bottleneck; add workers: swarm up workers -n {more}"
        )
    if "master" in outcome.saturated:
        render.err.print(
            f"[yellow]![/yellow] saturated: master ({outcome.saturated['master']:.0f}%) above "
            "90% CPU: it aggregates every worker's figures and may skew them; give it a "
            "bigger [ec2] master_type (or fewer worker processes)"
        )
    if outcome.missing:
        render.err.print(
            f"[yellow]![/yellow] missing workers: {', '.join(outcome.missing)} "
            "dropped out during the run"
        )
    if outcome.workers_seen < outcome.workers_expected:
        render.err.print(
            f"[yellow]![/yellow] only {outcome.workers_seen} of "
            f"{outcome.workers_expected} worker process(es) stayed connected"
        )
    render.err.print(f"results: {outcome.results_dir}")
    if outcome.baseline:
        render.err.print(f"baseline: {outcome.baseline}")
    for ch in outcome.checks:
        render.err.print(render.check_line(ch.check, ch.ok, ch.ambiguous, ch.says))
    report(ci.Report.of(sess.stack.name, outcome))
    verdict = outcome.judgement
    if verdict.verdict == Verdict.INTERRUPTED:
        stats = "partial results" if outcome.summary else "no statistics yet; logs"
        raise Interrupted(
            f"interrupted: the load is stopped on every node; {stats} in {outcome.results_dir}"
        )
    if verdict.exit_code:
        raise RunFailed(f"the run failed: {verdict.why}", verdict.exit_code)


def _stack_name(c: Ctx) -> str:
    """For a report of a run that stopped before its session: swarm.toml may be the cause."""
    if c.stack_name:
        return c.stack_name
    try:
        return c.config().stack.name
    except SwarmError:
        return "swarm"


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
