"""Commands: parse, call core, render. The one place that catches errors."""
from __future__ import annotations

import json
import shutil
import sys
import traceback
from pathlib import Path

import click

from swarm import __version__, config, core, render, runs
from swarm.errors import SwarmError, UsageError
from swarm.models import WORKER


class Ctx:
    def __init__(self, config_path: str | None, stack: str | None, debug: bool):
        self.config_path, self.stack_name, self.debug = config_path, stack, debug

    def config(self):
        return config.load(self.config_path, self.stack_name)

    def session(self) -> core.Session:
        return core.Session.open(self.config(), render.ConsoleReporter())


pass_ctx = click.make_pass_decorator(Ctx)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", metavar="PATH", help="swarm.toml to use (default ./swarm.toml).")
@click.option("--stack", metavar="NAME", help="Stack name (overrides [stack] name and SWARM_STACK).")
@click.option("--debug", is_flag=True, help="Show tracebacks for every error.")
@click.version_option(__version__, prog_name="swarm")
@click.pass_context
def cli(ctx, config_path, stack, debug):
    """Run distributed Locust load tests on EC2, SSH hosts, or this machine."""
    ctx.obj = Ctx(config_path, stack, debug)


@cli.command()
@click.argument("role", type=click.Choice(["master", "workers"]))
@click.option("-n", "count", type=int, help="Number of workers the stack should have.")
@pass_ctx
def up(c: Ctx, role, count):
    """Launch and bootstrap the master, or make the stack have exactly N workers."""
    if role == "workers" and count is None:
        raise UsageError("swarm up workers needs -n N (the number of workers the stack should have)")
    if role == "master" and count not in (None, 1):
        raise UsageError("a stack has one master: drop -n")
    if role == "workers":
        core.check_count(count)
    sess = c.session()
    result = core.up_master(sess) if role == "master" else core.scale_workers(sess, count)
    if result.nothing_to_do:
        render.err.print(result.nothing_to_do)
        return
    for n in result.removed:
        render.err.print(f"removed {n.name} ({n.id})")
    if result.bootstrap:
        render.out.print(render.host_results_table("Bootstrap", result.bootstrap))
    elif result.created:
        render.out.print(render.nodes_table("Launched", render.node_rows(result.created)))
    if result.failed:
        raise SwarmError(f"bootstrap failed on {len(result.failed)} of {len(result.bootstrap)} "
                         "node(s); they stay in `swarm status`: fix and run `swarm up` again, "
                         "or remove them with `swarm down`")


@cli.command(context_settings={"ignore_unknown_options": True})
@click.option("-H", "--host", required=True, help="Target base URL, e.g. https://staging.example.com")
@click.option("-f", "--locustfile", required=True, help="File in [locust] files_dir, or a path.")
@click.option("-u", "--users", type=click.IntRange(min=1), help="Peak number of users.")
@click.option("-r", "--spawn-rate", type=click.FloatRange(min=0, min_open=True), help="Users started per second.")
@click.option("-t", "--run-time", help="Stop after this long, e.g. 30s, 5m, 1h30m.")
@click.option("--headless", is_flag=True, help="No UI: run, wait, fetch results, print a summary.")
@click.option("--profile", help="A [profiles.NAME] of users / spawn_rate / run_time.")
@click.option("--check", "checks", multiple=True, metavar="EXPR",
              help="Fail (exit 1) unless it holds: p95<200ms, p99<1s, avg<100ms, fail_ratio<1%, rps>50, cpu<90%.")
@click.option("--require-all", is_flag=True, help="Refuse to start unless every worker is reachable.")
@click.argument("extra", nargs=-1, type=click.UNPROCESSED)
@pass_ctx
def run(c: Ctx, host, locustfile, users, spawn_rate, run_time, headless, profile, checks,
        require_all, extra):
    """(Re)start Locust on every node: master, then one worker process per core."""
    opts = runs.RunOptions(host=host, locustfile=locustfile, users=users, spawn_rate=spawn_rate,
                           run_time=run_time, headless=headless, profile=profile,
                           checks=tuple(checks), extra_args=tuple(a for a in extra if a != "--"),
                           require_all=require_all)
    sess = c.session()
    outcome = runs.run(sess, opts)
    if not headless:
        render.err.print(f"Locust runs on stack {sess.stack.name!r}: open the web UI with "
                         "`swarm ui`; stop it with `swarm killall`")
        return
    if outcome.summary:
        render.out.print(render.summary_table(outcome.summary))
    if outcome.saturated:
        hot = ", ".join(f"{name} ({cpu:.0f}%)" for name, cpu in sorted(outcome.saturated.items()))
        n_workers = len(sess.nodes(WORKER))
        more = max(n_workers + 1, n_workers * 2)
        render.err.print(f"[yellow]![/yellow] saturated: {hot} above 90% CPU: the swarm itself may "
                         f"be the bottleneck; add workers: swarm up workers -n {more}")
    if outcome.missing:
        render.err.print(f"[yellow]![/yellow] missing workers: {', '.join(outcome.missing)} "
                         "dropped out during the run")
    if outcome.workers_seen < outcome.workers_expected:
        render.err.print(f"[yellow]![/yellow] only {outcome.workers_seen} of "
                         f"{outcome.workers_expected} worker process(es) stayed connected")
    render.err.print(f"results: {outcome.results_dir}")
    failed = [ch for ch in outcome.checks if not ch["ok"]]
    for ch in outcome.checks:
        mark = "[green]pass[/green]" if ch["ok"] else "[red]FAIL[/red]"
        render.err.print(f"check {ch['check']}: {mark} (actual {ch['actual']:g})")
    if failed:
        raise SwarmError(f"{len(failed)} check(s) failed: {', '.join(ch['check'] for ch in failed)}")
    if outcome.exit_code:
        raise SystemExit(outcome.exit_code)


@cli.command()
@pass_ctx
def killall(c: Ctx):
    """Stop Locust everywhere; keep the machines."""
    results = runs.killall(c.session())
    render.err.print(f"Locust stopped on {len(results)} node(s)")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--watch", is_flag=True, help="Refresh in place every 2 s until Ctrl-C.")
@pass_ctx
def status(c: Ctx, as_json, watch):
    """The stack's nodes, and Locust's live state when it runs."""
    from swarm import live
    sess = c.session()

    book = core.price_book(sess)     # one per command: --watch asks AWS for prices once

    def snapshot() -> dict:
        nodes = sess.nodes()
        data = {"stack": sess.stack.name, "provider": sess.stack.provider,
                "nodes": render.node_rows(nodes), "locust": live.live_status(sess) if nodes else None}
        spent = core.cost_so_far(sess, nodes, book)
        if spent:
            data["cost"] = spent
        return data

    if as_json:
        click.echo(json.dumps(snapshot(), indent=2))
        return
    if not watch:
        render.out.print(render.status_view(snapshot()))
        return
    from rich.live import Live
    import time
    try:
        with Live(render.status_view(snapshot()), console=render.out, auto_refresh=False) as screen:
            while True:   # until Ctrl-C: a user-driven loop
                time.sleep(2)
                screen.update(render.status_view(snapshot()), refresh=True)
    except KeyboardInterrupt:
        pass    # the normal end of --watch


@cli.command()
@click.argument("node", default="master")
@click.option("--bootstrap", is_flag=True, help="The bootstrap log instead of Locust's.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until Ctrl-C.")
@pass_ctx
def logs(c: Ctx, node, bootstrap, follow):
    """Print Locust's log (or the bootstrap log) from NODE: master, worker-N or all."""
    from swarm import logs as logs_mod
    try:
        logs_mod.show(c.session(), node, bootstrap=bootstrap, follow=follow)
    except KeyboardInterrupt:
        pass    # the normal end of --follow


@cli.command()
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Local port (default 8089).")
@pass_ctx
def ui(c: Ctx, port):
    """Reach the master's web UI through an SSH tunnel (holds until Ctrl-C)."""
    from swarm import tunnel
    tunnel.hold(c.session(), port)


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("node")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@pass_ctx
def ssh(c: Ctx, node, command):
    """Open a shell on NODE, or run one command: swarm ssh worker-1 -- uptime"""
    from swarm import tunnel
    tunnel.exec_ssh(c.session(), node, [a for a in command if a != "--"])


@cli.command()
@click.argument("role", required=False, type=click.Choice(["workers"]))
@pass_ctx
def down(c: Ctx, role):
    """Terminate everything this stack created (or only its workers)."""
    result = core.down(c.session(), WORKER if role else None)
    if result.nothing_to_do:
        render.err.print(result.nothing_to_do)
        return
    render.err.print(f"removed {len(result.removed)} node(s): "
                     f"{', '.join(n.name for n in result.removed)}")


@cli.command()
def init():
    """Write ./swarm.toml from the documented example (never overwrites)."""
    target = Path("swarm.toml")
    if target.exists():
        raise SwarmError("swarm.toml already exists here; not overwriting it")
    shutil.copyfile(config.example_path(), target)
    render.err.print("wrote swarm.toml: every key is documented in it")


@cli.command()
@click.option("-t", "--run-time", default="15s", show_default=True, help="How long the demo load runs.")
def demo(run_time):
    """A full local cycle against a built-in target: up, run, summary, down."""
    from swarm import demo as demo_mod
    code = demo_mod.run_demo(run_time)
    if code:
        raise SystemExit(code)


@cli.command()
@click.argument("run_ref", metavar="[RUN]", required=False)
@click.option("--last", is_flag=True, help="Show the newest run again.")
@click.option("--compare", "pair", nargs=2, metavar="A B",
              help="Two runs side by side (ids, unique prefixes, paths, `last`, `prev`).")
@click.option("--fetch", "fetch_", is_flag=True,
              help="Download the latest run's results again from the master.")
@click.option("--all-stacks", is_flag=True, help="List the runs of every stack.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def results(c: Ctx, run_ref, last, pair, fetch_, all_stacks, as_json):
    """List past runs, show RUN again, compare two, or fetch the latest from the master."""
    from swarm import history
    history.command(c, run_ref, last, pair, fetch_, all_stacks, as_json)


def _interrupted() -> int:
    """Ctrl-C: say so and end now. Threads still talking to hosts (a bootstrap can take
    minutes) are not waited for: the process ends without joining them; what runs on the
    nodes keeps running, and `swarm status` / `swarm down` find it by its tags."""
    import os
    import threading

    render.err.print("interrupted")
    busy = [t for t in threading.enumerate()
            if t is not threading.main_thread() and t.is_alive() and not t.daemon]
    if busy:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(130)
    return 130


def main(argv=None) -> int:
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, prog_name="swarm", standalone_mode=False)
        return 0
    except (click.exceptions.Abort, KeyboardInterrupt):
        return _interrupted()
    except click.ClickException as e:
        click.echo(f"error: {e.format_message()}", err=True)
        return e.exit_code
    except SwarmError as e:
        if debug:
            traceback.print_exc()
        click.echo(f"error: {e}", err=True)
        return e.exit_code
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
