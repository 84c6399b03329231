"""`swarm results`: list past runs, show one again, compare two, fetch the latest again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from swarm.cli import html, render
from swarm.cli.app import Ctx, cli, pass_ctx
from swarm.errors import UsageError
from swarm.pipeline import charts, history, judge
from swarm.pipeline.history import METRICS, Delta, RunInfo, run_row
from swarm.pipeline.record import RUN_FILE

ROOT = Path("results")
BARE_LAST = -1  # `--last` without N


def _echo(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


@cli.command()
@click.argument("refs", metavar="[RUN]...", nargs=-1)
@click.option(
    "--last",
    type=int,
    is_flag=False,
    flag_value=BARE_LAST,
    default=None,
    metavar="[N]",
    help="Show the newest run again; with --trend, how many runs to chart.",
)
@click.option(
    "--compare",
    is_flag=True,
    help="Runs side by side: --compare A B (--html: A B C...; ids, prefixes, paths, last, prev).",
)
@click.option("--trend", is_flag=True, help="The stack's past runs over time (with --html).")
@click.option(
    "--html",
    "html_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write --compare or --trend as one self-contained HTML page with charts.",
)
@click.option(
    "--fetch",
    "fetch_again",
    is_flag=True,
    help="Download the latest run's results again from the master.",
)
@click.option("--all-stacks", is_flag=True, help="List the runs of every stack.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def results(
    c: Ctx,
    refs: tuple[str, ...],
    last: int | None,
    compare: bool,
    trend: bool,
    html_file: Path | None,
    fetch_again: bool,
    all_stacks: bool,
    as_json: bool,
) -> None:
    """List past runs, show RUN again, compare runs, chart them, or fetch the latest again."""
    if trend or html_file:
        return _html(c, refs, last, compare, trend, html_file, fetch_again or all_stacks or as_json)
    if compare and len(refs) != 2:
        raise UsageError("--compare A B takes two runs (more with --html FILE)")
    if last not in (None, BARE_LAST):
        raise UsageError(f"--last {last}: a count of runs goes with --trend")
    if len(refs) > 1 and not compare:
        raise UsageError("give one of RUN, --last, --compare A B or --fetch")
    pair = refs if compare else None
    run_ref = None if compare or not refs else refs[0]
    show_last = last is not None
    if sum(map(bool, (run_ref, show_last, pair, fetch_again))) > 1:
        raise UsageError("give one of RUN, --last, --compare A B or --fetch")
    if all_stacks and (run_ref or show_last or pair or fetch_again):
        raise UsageError("--all-stacks only lists runs: drop it to show, compare or fetch one")
    if fetch_again:
        run = history.fetch_latest(c.session(), ROOT)
        render.err.print(f"fetched into {run.path}")
        return _echo(history.run_json(run)) if as_json else _show(run)
    stack = c.config().stack.name
    runs = history.list_runs(ROOT, None if all_stacks else stack)
    if pair:
        a, b = (history.resolve(runs, x, stack) for x in pair)
        rows, diff = history.compare(a, b), history.differences(a, b)
        if as_json:
            return _echo(
                {
                    "a": {"id": a.id, "path": str(a.path)},
                    "b": {"id": b.id, "path": str(b.path)},
                    "comparable": not diff,
                    "differences": diff,
                    "rows": [r.to_json() for r in rows],
                }
            )
        render.out.print(compare_table(a, b, rows))
        if diff:
            render.err.print(f"[yellow]![/yellow] not comparable: {escape('; '.join(diff))}")
        return None
    if run_ref or show_last:
        run = history.resolve(runs, run_ref or "last", stack)
        return _echo(history.run_json(run)) if as_json else _show(run)
    if as_json:
        return _echo(
            {
                "stack": None if all_stacks else stack,
                "runs": [history.run_row(r).to_json() for r in runs],
            }
        )
    if not runs:
        render.err.print(
            f"no runs of stack {stack!r} in {ROOT / stack}/ yet: `swarm run --headless` saves one"
        )
        return None
    title = "runs of every stack" if all_stacks else f"runs of stack {stack}"
    render.out.print(runs_table(title, runs, with_stack=all_stacks))
    return None


def _html(
    c: Ctx,
    refs: tuple[str, ...],
    last: int | None,
    compare: bool,
    trend: bool,
    out: Path | None,
    other: bool,
) -> None:
    if compare == trend or out is None or other:
        raise UsageError("--html FILE writes --compare A B [C...] or --trend [--last N]")
    if trend and refs:
        raise UsageError("--trend charts the stack's past runs: it takes no RUN")
    stack = c.config().stack.name
    runs = history.list_runs(ROOT, stack)
    if compare:
        picked = [history.resolve(runs, r, stack) for r in refs]
        page = html.compare_page(charts.comparison(stack, picked))
    else:
        page = html.trend_page(
            charts.trend(stack, runs, charts.TREND_LAST if last in (None, BARE_LAST) else last)
        )
    html.write(out, page)
    render.err.print(f"wrote {escape(str(out))}")


def _show(run: history.RunInfo) -> None:
    if run.summary is not None:
        render.out.print(render.summary_table(run.summary))
    else:
        render.err.print(f"[yellow]![/yellow] run {run.id} has no statistics")
    if not run.complete:
        render.err.print(f"[yellow]![/yellow] run {run.id} is incomplete: no readable {RUN_FILE}")
    verdict = history.run_row(run).verdict
    if verdict:
        render.err.print(f"verdict: {VERDICT_STYLE.get(verdict, '{}').format(verdict)}")
    rec = run.record or {}
    if rec.get("baseline"):
        render.err.print(f"baseline: {escape(str(rec['baseline']))}")
    for ch in rec.get("checks") or []:
        # older records kept no `says`: their checks were all absolute
        says = ch.get("says") or f"actual {judge.shown(judge.metric_of(ch), ch.get('actual'))}"
        render.err.print(
            render.check_line(
                str(ch.get("check")), bool(ch.get("ok")), bool(ch.get("ambiguous")), says
            )
        )
    render.err.print(f"results: {run.path}")


# ---- the tables ----


def runs_table(title: str, runs: list[RunInfo], with_stack: bool = False) -> Table:
    t = Table(title=title, title_justify="left")
    for c in [
        "id",
        *(["stack"] if with_stack else []),
        "started",
        "locustfile",
        "host",
        "users",
        "requests",
        "rps",
        "p95 ms",
        "fail %",
        "verdict",
        "checks",
    ]:
        t.add_column(
            c,
            justify="left"
            if c in ("id", "stack", "started", "locustfile", "host", "verdict", "checks")
            else "right",
        )
    for r in runs:
        x = run_row(r)
        ok, bad = x.checks_passed, x.checks_failed
        checks = "-" if not ok + bad else f"{ok} ok" + (f", [red]{bad} failed[/red]" if bad else "")
        started = (
            render.or_dash(x.started_at).replace("+00:00", "Z") if r.complete else "incomplete"
        )
        fail = None if x.fail_ratio is None else x.fail_ratio * 100
        t.add_row(
            escape(r.id),
            *([escape(r.stack)] if with_stack else []),
            started,
            escape(render.or_dash(x.locustfile)),
            escape(render.or_dash(x.host)),
            render.or_dash(x.users),
            render.or_dash(x.requests),
            render.or_dash(x.rps, "{:.1f}"),
            render.or_dash(x.p95_ms, "{:.0f}"),
            render.or_dash(fail, "{:.2f}"),
            VERDICT_STYLE.get(x.verdict or "", "-").format(x.verdict),
            checks,
        )
    return t


VERDICT_STYLE = {
    "pass": "[green]{}[/green]",
    "fail": "[red]{}[/red]",
    "error": "[red]{}[/red]",
    "interrupted": "[yellow]{}[/yellow]",
}


def _metric(metric: str, v: float, signed: bool = False) -> str:
    s = "+" if signed else ""
    if metric == "fail_ratio":
        return f"{v * 100:{s}.2f}%"
    return f"{v:{s}.0f}" if metric == "requests" else f"{v:{s}.1f}"


def compare_table(a: RunInfo, b: RunInfo, rows: list[Delta]) -> Table:
    t = Table(title=f"A = {a.id}   B = {b.id}", title_justify="left")
    for c in ("endpoint", "metric", "A", "B", "delta", "delta %"):
        t.add_column(c, justify="left" if c in ("endpoint", "metric") else "right")
    for i, r in enumerate(rows):
        m, d, worse = r.metric, r.delta, r.worse
        color = "" if worse is None or d == 0 else ("red" if worse else "green")
        pct = "-" if r.delta_pct is None else f"{r.delta_pct:+.1f}%"
        t.add_row(
            escape(r.endpoint) if i % len(METRICS) == 0 else "",
            m.removesuffix("_ms"),
            _metric(m, r.a),
            _metric(m, r.b),
            f"[{color}]{_metric(m, d, True)}[/{color}]" if color else _metric(m, d, True),
            pct,
            end_section=i % len(METRICS) == len(METRICS) - 1,
        )
    return t
