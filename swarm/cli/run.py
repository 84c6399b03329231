"""`swarm run`: (re)start Locust on every node; headless, what the run did and its verdict
(the summary, the warnings, the checks, the CI report, the exit code)."""

from __future__ import annotations

import os
from pathlib import Path

import click
from rich.markup import escape

from swarm.cli import ci, render
from swarm.cli.app import Ctx, cli, pass_ctx
from swarm.errors import Interrupted, RunFailed, SwarmError, UsageError
from swarm.models import Role
from swarm.pipeline.judge import Verdict


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
