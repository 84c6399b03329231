"""Past runs: list them, show one again, compare two, fetch the latest again from the master.

Everything reads results/<stack>/<id>/run.json (or Locust's stats CSV when run.json is missing);
only fetch_latest touches the stack.
"""
from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from swarm import __version__
from swarm import locust as L
from swarm.errors import SwarmError, UsageError
from swarm.models import MASTER

RUN_FILE = "run.json"
STATS_CSV = f"{Path(L.CSV_PREFIX).name}_stats.csv"
METRICS = ("rps", "p50_ms", "p95_ms", "p99_ms", "avg_ms", "fail_ratio", "requests")
LOWER_IS_BETTER = {"p50_ms", "p95_ms", "p99_ms", "avg_ms", "fail_ratio"}


@dataclass
class RunInfo:
    id: str
    stack: str
    path: Path
    record: dict[str, Any] | None       # run.json, None when missing or unreadable
    summary: L.Summary | None

    @property
    def complete(self) -> bool:
        return self.record is not None


def summary_from_json(d: dict[str, Any]) -> L.Summary:
    def ep(e: dict[str, Any]) -> L.EndpointStats:
        return L.EndpointStats(e.get("method", ""), e.get("name", ""), int(e.get("requests", 0)),
                               int(e.get("failures", 0)), *(float(e.get(k) or 0) for k in (
                                   "rps", "avg_ms", "p50_ms", "p95_ms", "p99_ms", "max_ms")))
    return L.Summary([ep(e) for e in d.get("endpoints", [])], ep(d["total"]),
                     dict(d.get("workers_cpu") or {}))


def load_run(path: Path) -> RunInfo:
    """A run dir: its run.json, and its summary from there or else from Locust's stats CSV."""
    path, record, summary = Path(path), None, None
    try:
        record = json.loads((path / RUN_FILE).read_text())
        record = record if isinstance(record, dict) else None
        summary = summary_from_json((record or {})["summary"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    try:
        summary = summary or L.parse_stats_csv((path / STATS_CSV).read_text())
    except (OSError, ValueError):
        pass
    return RunInfo(path.name, path.parent.name, path, record, summary)


def list_runs(root: Path, stack: str | None) -> list[RunInfo]:
    """Runs of one stack (every stack when None), oldest first: ids are UTC timestamps."""
    stacks = [root / stack] if stack else sorted(p for p in Path(root).glob("*") if p.is_dir())
    runs = [load_run(d) for s in stacks if s.is_dir() for d in s.iterdir() if d.is_dir()]
    return sorted(runs, key=lambda r: (r.id, r.stack))


def resolve(runs: list[RunInfo], ref: str, stack: str) -> RunInfo:
    """A run by id, unique id prefix, path, or `last` / `prev`."""
    if ref in ("last", "prev"):
        i = -1 if ref == "last" else -2
        if len(runs) < -i:
            raise UsageError(f"stack {stack!r} has {len(runs)} run(s) in results/: no {ref!r} run")
        return runs[i]
    p = Path(ref)
    if ("/" in ref or ref.startswith(".")) and p.is_dir():
        return load_run(p)
    found = [r for r in runs if r.id == ref] or [r for r in runs if r.id.startswith(ref)]
    if len(found) == 1:
        return found[0]
    ids = [r.id for r in (found or runs)]
    shown = ", ".join(ids[-10:]) + (f" (and {len(ids) - 10} older)" if len(ids) > 10 else "")
    if found:
        raise UsageError(f"run {ref!r} is ambiguous: {len(found)} runs start with it ({shown})")
    raise UsageError(f"no run {ref!r} of stack {stack!r} (runs: {shown or 'none yet'})")


def _sha(rec: dict[str, Any]) -> str | None:
    return (rec.get("files") or {}).get(rec.get("locustfile") or "")


_SAME = (("locustfile", lambda r: r.get("locustfile")), ("locustfile sha256", _sha),
         ("users", lambda r: r.get("users")), ("run_time", lambda r: r.get("run_time")),
         ("host", lambda r: r.get("host")),
         ("workers", lambda r: (r.get("instances") or {}).get("workers")),
         ("worker processes", lambda r: r.get("workers_expected")))


def differences(a: RunInfo, b: RunInfo) -> list[str]:
    """What makes two runs not comparable (empty when they are)."""
    def show(label: str, v: Any) -> str:
        return "?" if v is None else str(v)[:12] if "sha" in label else str(v)
    pairs = ((label, get(a.record or {}), get(b.record or {})) for label, get in _SAME)
    return [f"{label} {show(label, va)} vs {show(label, vb)}" for label, va, vb in pairs if va != vb]


def compare(a: RunInfo, b: RunInfo) -> list[dict[str, Any]]:
    """One row per (endpoint, metric): the total, then every endpoint present in both."""
    if a.summary is None or b.summary is None:
        missing = a if a.summary is None else b
        raise SwarmError(f"run {missing.id} has no statistics to compare ({missing.path})")
    eps_b = {(e.method, e.name): e for e in b.summary.endpoints}
    pairs = [("Total", a.summary.total, b.summary.total)]
    pairs += [(f"{e.method} {e.name}".strip(), e, eps_b[(e.method, e.name)])
              for e in a.summary.endpoints if (e.method, e.name) in eps_b]
    rows = []
    for label, ea, eb in pairs:
        for m in METRICS:
            va, vb = float(getattr(ea, m)), float(getattr(eb, m))
            rows.append({"endpoint": label, "metric": m, "a": va, "b": vb, "delta": vb - va,
                         "delta_pct": round((vb - va) / va * 100, 2) if va else None})
    return rows


def run_row(r: RunInfo) -> dict[str, Any]:
    rec, t = r.record or {}, r.summary.total if r.summary else None
    checks = rec.get("checks") or []
    return {"id": r.id, "stack": r.stack, "path": str(r.path), "complete": r.complete,
            "fetched": bool(rec.get("fetched")), "started_at": rec.get("started_at"),
            "locustfile": rec.get("locustfile"), "host": rec.get("host"), "users": rec.get("users"),
            "requests": t.requests if t else None, "rps": round(t.rps, 2) if t else None,
            "p95_ms": t.p95_ms if t else None, "fail_ratio": round(t.fail_ratio, 6) if t else None,
            "exit_code": rec.get("exit_code"), "checks_passed": sum(bool(c.get("ok")) for c in checks),
            "checks_failed": sum(not c.get("ok") for c in checks)}


def run_json(r: RunInfo) -> dict[str, Any]:
    return {"id": r.id, "stack": r.stack, "path": str(r.path), "complete": r.complete,
            "record": r.record, "summary": r.summary.to_json() if r.summary else None}


def _v(x: Any, fmt: str = "{}") -> str:
    return "-" if x is None else fmt.format(x)


def runs_table(title: str, runs: list[RunInfo], with_stack: bool = False) -> Table:
    t = Table(title=title, title_justify="left")
    for c in ["id", *(["stack"] if with_stack else []), "started", "locustfile", "host", "users",
              "requests", "rps", "p95 ms", "fail %", "exit", "checks"]:
        t.add_column(c, justify="left" if c in ("id", "stack", "started", "locustfile", "host",
                                                 "checks") else "right")
    for r in runs:
        x = run_row(r)
        ok, bad = x["checks_passed"], x["checks_failed"]
        checks = "-" if not ok + bad else f"{ok} ok" + (f", [red]{bad} failed[/red]" if bad else "")
        started = _v(x["started_at"]).replace("+00:00", "Z") if r.complete else "incomplete"
        fail = None if x["fail_ratio"] is None else x["fail_ratio"] * 100
        t.add_row(escape(r.id), *([escape(r.stack)] if with_stack else []), started,
                  escape(_v(x["locustfile"])), escape(_v(x["host"])), _v(x["users"]),
                  _v(x["requests"]), _v(x["rps"], "{:.1f}"), _v(x["p95_ms"], "{:.0f}"),
                  _v(fail, "{:.2f}"), _v(x["exit_code"]), checks)
    return t


def _fmt(metric: str, v: float, signed: bool = False) -> str:
    s = "+" if signed else ""
    if metric == "fail_ratio":
        return f"{v * 100:{s}.2f}%"
    return f"{v:{s}.0f}" if metric == "requests" else f"{v:{s}.1f}"


def compare_table(a: RunInfo, b: RunInfo, rows: list[dict[str, Any]]) -> Table:
    t = Table(title=f"A = {a.id}   B = {b.id}", title_justify="left")
    for c in ("endpoint", "metric", "A", "B", "delta", "delta %"):
        t.add_column(c, justify="left" if c in ("endpoint", "metric") else "right")
    for i, r in enumerate(rows):
        m, d = r["metric"], r["delta"]
        worse = d > 0 if m in LOWER_IS_BETTER else (d < 0 if m == "rps" else None)
        color = "" if worse is None or d == 0 else ("red" if worse else "green")
        pct = "-" if r["delta_pct"] is None else f"{r['delta_pct']:+.1f}%"
        t.add_row(escape(r["endpoint"]) if i % len(METRICS) == 0 else "", m.removesuffix("_ms"),
                  _fmt(m, r["a"]), _fmt(m, r["b"]),
                  f"[{color}]{_fmt(m, d, True)}[/{color}]" if color else _fmt(m, d, True), pct,
                  end_section=i % len(METRICS) == len(METRICS) - 1)
    return t


# ---- --fetch: the master keeps <remote_dir>/results until the next run starts ----

def _fetched_dir(root: Path, stack: str) -> Path:
    base = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    d, n = root / stack / f"{base}-fetched", 1
    while d.exists():
        n += 1
        d = root / stack / f"{base}-fetched-{n}"
    return d


def _started_at(stats_json: Path) -> str | None:
    """When Locust started counting, from its stats.json (the fetched run has no run.json)."""
    try:
        t = min(float(e["start_time"]) for e in json.loads(stats_json.read_text()))
        return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")
    except (OSError, ValueError, TypeError, KeyError):
        return None


def fetch_latest(sess, root: Path) -> RunInfo:
    """Download the master's results and every node's log again, into a new run dir."""
    from swarm.results import fetch

    nodes = sess.nodes()
    masters = [n for n in nodes if n.role == MASTER]
    if not masters:
        raise UsageError(f"stack {sess.stack.name!r} has no master: nothing to fetch")
    master, workers = masters[0], [n for n in nodes if n.role != MASTER]
    rd = sess.stack.config.bootstrap.remote_dir
    runners = {n.id: sess.provider.runner(sess.stack, n) for n in [master, *workers]}
    try:
        probe = runners[master.id].run(
            f"echo running=$( {L.running_cmd(rd)} ); cd {shlex.quote(rd)} 2>/dev/null && "
            f"{{ [ -s {L.CSV_PREFIX}_stats.csv ] && echo stats=yes; "
            "echo exit=$(cat locust.exit 2>/dev/null); }", timeout=30, check=False)
        facts = dict(line.split("=", 1) for line in probe.stdout.splitlines() if "=" in line)
        if "running" not in facts:
            raise SwarmError(f"could not ask the master for its results: "
                             f"{probe.tail(1) or 'no answer'}")
        if facts.get("stats") != "yes":
            raise SwarmError(f"the master of stack {sess.stack.name!r} has no results to fetch "
                             f"(no headless run since `swarm up`, or a newer run cleared them)")
        if facts.get("running") == "yes":
            sess.report.warn("Locust still runs on the master: these results are partial")
        out = _fetched_dir(root, sess.stack.name)
        try:
            fetch(sess, master, workers, runners, out)
            run = load_run(out)
            if run.summary is None:
                raise SwarmError(f"could not bring back the statistics into {out}: the results "
                                 "stay on the master until the next run; `swarm results --fetch` "
                                 "again once the cause is fixed")
            exit_code = facts.get("exit", "").strip()
            record = {"swarm_version": __version__, "stack": sess.stack.name,
                      "provider": sess.stack.provider, "fetched": True,
                      "started_at": _started_at(out / Path(L.JSON_FILE).name),
                      "fetched_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                      "instances": {"workers": len(workers)},
                      "exit_code": int(exit_code) if exit_code.isdigit() else None,
                      "checks": [], "summary": run.summary.to_json()}
            (out / RUN_FILE).write_text(json.dumps(record, indent=2))
        except OSError as e:
            raise SwarmError(f"cannot write {out}: {e.strerror or e}; the results stay on the "
                             "master: free space and run `swarm results --fetch` again") from None
        return load_run(out)
    finally:
        for r in runners.values():
            r.close()


# ---- the `swarm results` command (cli.py only parses its options) ----

def command(ctx, ref: str | None, last: bool, pair: tuple[str, str] | None, fetch_: bool,
            all_stacks: bool, as_json: bool, root: Path = Path("results")) -> None:
    import click

    from swarm import render

    if sum(map(bool, (ref, last, pair, fetch_))) > 1:
        raise UsageError("give one of RUN, --last, --compare A B or --fetch")
    if all_stacks and (ref or last or pair or fetch_):
        raise UsageError("--all-stacks only lists runs: drop it to show, compare or fetch one")
    echo = lambda data: click.echo(json.dumps(data, indent=2))  # noqa: E731
    if fetch_:
        sess = ctx.session()
        run = fetch_latest(sess, root)
        render.err.print(f"fetched into {run.path}")
        return echo(run_json(run)) if as_json else _show(run, render)
    stack = ctx.config().stack.name
    runs = list_runs(root, None if all_stacks else stack)
    if pair:
        a, b = (resolve(runs, x, stack) for x in pair)
        rows, diff = compare(a, b), differences(a, b)
        if as_json:
            return echo({"a": {"id": a.id, "path": str(a.path)},
                         "b": {"id": b.id, "path": str(b.path)},
                         "comparable": not diff, "differences": diff, "rows": rows})
        render.out.print(compare_table(a, b, rows))
        if diff:
            render.err.print(f"[yellow]![/yellow] not comparable: {escape('; '.join(diff))}")
        return None
    if ref or last:
        run = resolve(runs, ref or "last", stack)
        return echo(run_json(run)) if as_json else _show(run, render)
    if as_json:
        return echo({"stack": None if all_stacks else stack, "runs": [run_row(r) for r in runs]})
    if not runs:
        render.err.print(f"no runs of stack {stack!r} in {root / stack}/ yet: "
                         "`swarm run --headless` saves one")
        return None
    title = "runs of every stack" if all_stacks else f"runs of stack {stack}"
    render.out.print(runs_table(title, runs, with_stack=all_stacks))


def _show(run: RunInfo, render) -> None:
    if run.summary is not None:
        render.out.print(render.summary_table(run.summary))
    else:
        render.err.print(f"[yellow]![/yellow] run {run.id} has no statistics")
    if not run.complete:
        render.err.print(f"[yellow]![/yellow] run {run.id} is incomplete: no readable {RUN_FILE}")
    for ch in (run.record or {}).get("checks") or []:
        mark = "[green]pass[/green]" if ch.get("ok") else "[red]FAIL[/red]"
        render.err.print(f"check {escape(str(ch.get('check')))}: {mark} (actual {_v(ch.get('actual'), '{:g}')})")
    render.err.print(f"results: {run.path}")
