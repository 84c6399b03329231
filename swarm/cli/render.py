"""Tables and messages. Progress goes to stderr, data (tables, JSON) to stdout."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.table import Table

from swarm.cli import progress
from swarm.locust.live import LiveView
from swarm.locust.stats import Failure, Raised, Summary
from swarm.models import HostResult, Node
from swarm.pipeline import expiry
from swarm.pipeline.cost import format_usd
from swarm.pipeline.progress import Board, span_text
from swarm.pipeline.session import Reporter
from swarm.pipeline.status import Status

ISO = "%Y-%m-%dT%H:%M:%SZ"
# Off a terminal (CI logs, pipes) rich would squeeze tables into 80 columns.
err = Console(
    stderr=True, highlight=False, soft_wrap=True, width=None if sys.stderr.isatty() else 160
)
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)


class ConsoleReporter(Reporter):
    def info(self, msg: str) -> None:
        err.print(f"[dim]•[/dim] {escape(msg)}")

    def warn(self, msg: str) -> None:
        err.print(f"[yellow]![/yellow] {escape(msg)}")

    @contextmanager
    def phases(self) -> Iterator[Board]:
        with progress.shown(err) as board:
            yield board

    @contextmanager
    def running(self) -> Iterator[Callable[[str], None]]:
        with progress.live_line(err) as say:
            yield say


def or_dash(x: Any, fmt: str = "{}") -> str:
    return "-" if x is None else fmt.format(x)


def _age(seconds: float | None) -> str:
    return "-" if seconds is None else span_text(seconds)


def node_rows(nodes: Sequence[Node]) -> list[dict[str, Any]]:
    """The nodes as `status --json` shows them."""
    now = time.time()
    return [
        {
            "name": n.name,
            "role": str(n.role),
            "id": n.id,
            "type": n.instance_type or "-",
            "state": str(n.state),
            "private_ip": n.private_ip,
            "public_ip": n.public_ip,
            "lifecycle": str(n.lifecycle),
            "zone": n.zone,
            "uptime_s": round(now - n.launched_at) if n.launched_at else None,
            "expires_in_s": round(n.expires_at - now) if n.expires_at else None,
            "expires_at": _iso(n.expires_at),
        }
        for n in nodes
    ]


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc).strftime(ISO)


def nodes_table(title: str, rows: list[dict[str, Any]]) -> Table:
    t = Table(title=title, title_justify="left")
    for col in (
        "name",
        "id",
        "type",
        "state",
        "private ip",
        "public ip",
        "lifecycle",
        "uptime",
        "expires in",
    ):
        t.add_column(col)
    for r in rows:
        t.add_row(
            escape(r["name"]),
            r["id"],
            r["type"],
            r["state"],
            r["private_ip"] or "-",
            r["public_ip"] or "-",
            r["lifecycle"],
            _age(r["uptime_s"]),
            _age(r["expires_in_s"]),
        )
    return t


def host_results_table(title: str, results: Sequence[HostResult]) -> Table:
    t = Table(title=title, title_justify="left")
    t.add_column("node")
    t.add_column("id")
    t.add_column("outcome")
    for r in results:
        t.add_row(
            r.node.name,
            r.node.id,
            "[green]ok[/green]" if r.ok else f"[red]failed[/red]: {escape(r.error)}",
        )
    return t


SUMMARY_COLUMNS = ("type", "name", "requests", "failures", "fail %", "rps") + tuple(
    f"{m} ms" for m in ("avg", "p50", "p95", "p99", "max")
)


def summary_rows(summary: Summary) -> tuple[tuple[str, ...], list[list[str]]]:
    """The per-name figures and the total last, as text: the terminal's table and CI's."""
    return SUMMARY_COLUMNS, [
        [
            e.method,
            "Total" if e is summary.total else e.name,
            str(e.requests),
            str(e.failures),
            f"{e.fail_ratio * 100:.1f}",
            f"{e.rps:.1f}",
            *(f"{ms:.0f}" for ms in (e.avg_ms, e.p50_ms, e.p95_ms, e.p99_ms, e.max_ms)),
        ]
        for e in [*summary.endpoints, summary.total]
    ]


def summary_table(summary: Summary) -> Table:
    t = Table(title="Summary", title_justify="left")
    heads, rows = summary_rows(summary)
    for col in heads:
        t.add_column(col, justify="left" if col in ("type", "name") else "right")
    for i, row in enumerate(rows):
        t.add_row(*map(escape, row), style="bold" if i == len(rows) - 1 else None)
    return t


def check_line(check: str, ok: bool, ambiguous: bool, says: str) -> str:
    """`check p95<300ms: FAIL (actual 412 ms)`, as a run and `swarm results RUN` show it."""
    mark = "[green]pass[/green]" if ok else "[red]ERROR[/red]" if ambiguous else "[red]FAIL[/red]"
    return f"check {escape(check)}: {mark} ({escape(says)})"


def failures_table(failures: Sequence[Failure], limit: int = 5) -> Table:
    """Locust's top failures (its failures CSV), most frequent first."""
    more = f" (top {limit} of {len(failures)})" if len(failures) > limit else ""
    t = Table(title=f"Failures{more}", title_justify="left")
    for col in ("type", "name", "error", "occurrences"):
        t.add_column(col, justify="right" if col == "occurrences" else "left")
    for f in failures[:limit]:
        t.add_row(escape(f.method), escape(f.name), escape(f.error), str(f.occurrences))
    return t


def raised_table(raised: Sequence[Raised], limit: int = 5) -> Table:
    """The exceptions the tasks raised (Locust's exceptions CSV), most frequent first."""
    more = f" (top {limit} of {len(raised)})" if len(raised) > limit else ""
    t = Table(title=f"Exceptions{more}", title_justify="left")
    for col in ("count", "message", "where"):
        t.add_column(col, justify="right" if col == "count" else "left")
    for e in raised[:limit]:
        t.add_row(str(e.count), escape(e.message), escape(e.where or "-"))
    return t


def locust_table(view: LiveView, cpu: dict[str, float] | None = None) -> Table:
    t = Table(title="Locust", title_justify="left", show_header=False)
    t.add_column("what")
    t.add_column("value")
    if view.error is not None:
        t.add_row("state", f"unknown ({escape(view.error)})")
        return t
    t.add_row("state", str(view.state))
    if not view.running:
        return t
    want = view.workers_expected
    workers = (
        f"{view.workers_connected} of {want} connected" if want else str(view.workers_connected)
    )
    if view.missing:
        workers += f" (missing: {', '.join(view.missing)})"
    p95 = view.p95_ms
    t.add_row("users", str(view.users))
    t.add_row("workers", workers)
    by_node: dict[str, int] = {}
    for w in view.workers:
        if w.node:
            by_node[w.node] = by_node.get(w.node, 0) + (w.users or 0)
    if by_node:
        t.add_row("users per worker", ", ".join(f"{escape(n)} {u}" for n, u in by_node.items()))
    if view.roster:  # workers that joined or left the running test (`swarm up workers`)
        t.add_row(
            "joined / left",
            ", ".join(f"{escape(e.worker)} {e.event} at {e.at[11:19]}" for e in view.roster),
        )
    t.add_row("rps", f"{view.total_rps:.1f}")
    t.add_row("fail ratio", f"{view.fail_ratio * 100:.2f}%")
    t.add_row("p95", "-" if p95 is None else f"{p95:.0f} ms")
    if cpu:  # swarm's own samples, by node
        t.add_row("CPU", ", ".join(f"{escape(n)} {pct:.0f}%" for n, pct in sorted(cpu.items())))
    else:  # Locust's figure, where its worker ids map to nodes
        named = [w for w in view.workers if w.node]
        t.add_row(
            "worker CPU",
            ", ".join(f"{escape(str(w.node))} {w.cpu or 0:.0f}%" for w in named) or "-",
        )
    return t


def status_json(s: Status) -> dict[str, Any]:
    data: dict[str, Any] = {
        "stack": s.stack,
        "provider": s.provider,
        "nodes": node_rows(s.nodes),
        "locust": s.locust.to_json() if s.locust else None,
        "expires_at": _iso(s.expires_at),
        "expires_in_s": None if s.expires_at is None else round(s.expires_at - time.time()),
    }
    if s.cost:
        data["cost"] = s.cost.to_json()
    if s.cpu:
        data["cpu"] = dict(sorted(s.cpu.items()))
    if s.ports:
        data["ports"] = {"master": s.ports.port, "web": s.ports.web, "bind": s.ports.bind}
    if s.region:
        data["region"] = s.region
    if s.elsewhere:
        nodes = {o.region: node_rows(o.nodes) for o in s.others}
        data["other_regions"] = [
            {**e.to_json(), **({"nodes": nodes[e.region]} if e.region in nodes else {})}
            for e in s.elsewhere
        ]
    return data


def status_view(s: Status) -> RenderableType:
    if not s.nodes and not s.others:
        return f"stack {s.stack!r} ({s.provider}) has no nodes"
    parts: list[RenderableType] = [
        nodes_table(f"stack {s.stack} ({s.provider})", node_rows(s.nodes))
        if s.nodes
        else f"stack {s.stack!r} ({s.provider}, {s.region}) has no nodes"
    ]
    if s.expires_at is not None:
        parts.append(
            f"powers off at {expiry.at_text(s.expires_at, with_date=True)} (in "
            f"{expiry.left_text(s.expires_at - time.time())}): `swarm extend DURATION` moves "
            "it to DURATION from now"
        )
    if s.cost:
        # the time left is on the line above
        text = s.cost.text if s.expires_at is None else f"spent so far: {format_usd(s.cost.usd)}"
        parts.append(escape(text))
    if s.ports and s.ports.bind:  # local: ports of its own, on this machine
        parts.append(
            f"master on {s.ports.bind}:{s.ports.port}, web UI http://127.0.0.1:{s.ports.web}"
        )
    if s.locust:
        parts.append(locust_table(s.locust, s.cpu))
    for o in s.others:
        parts.append(nodes_table(f"stack {o.stack} ({o.provider}, {o.region})", node_rows(o.nodes)))
        if o.cost:
            parts.append(escape(o.cost.text))
    return Group(*parts)
