"""Tables and messages. Progress goes to stderr, data (tables, JSON) to stdout."""
from __future__ import annotations

import time

import sys

from rich.console import Console
from rich.markup import escape
from rich.table import Table

# Off a terminal (CI logs, pipes) rich would squeeze tables into 80 columns.
_width = None if sys.stdout.isatty() else 160
err = Console(stderr=True, highlight=False, soft_wrap=True, width=None if sys.stderr.isatty() else 160)
out = Console(highlight=False, soft_wrap=True, width=_width)


class ConsoleReporter:
    def info(self, msg: str) -> None:
        err.print(f"[dim]•[/dim] {escape(msg)}")

    def warn(self, msg: str) -> None:
        err.print(f"[yellow]![/yellow] {escape(msg)}")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    sign = "-" if s < 0 else ""
    s = abs(s)
    if s >= 3600:
        return f"{sign}{s // 3600}h{(s % 3600) // 60:02d}m"
    if s >= 60:
        return f"{sign}{s // 60}m{s % 60:02d}s"
    return f"{sign}{s}s"


def node_rows(nodes) -> list[dict]:
    now = time.time()
    rows = []
    for n in nodes:
        exp = n.meta.get("expires_at")
        rows.append({
            "name": n.name, "role": n.role, "id": n.id, "type": n.meta.get("instance_type", "-"),
            "state": n.state, "private_ip": n.private_ip, "public_ip": n.public_ip,
            "lifecycle": n.meta.get("lifecycle", "-"),
            "uptime_s": round(now - n.launched_at) if n.launched_at else None,
            "expires_in_s": round(exp - now) if exp else None,
            "bootstrap": n.meta.get("bootstrap"),
        })
    return rows


def nodes_table(title: str, rows: list[dict]) -> Table:
    t = Table(title=title, title_justify="left")
    for col in ("name", "id", "type", "state", "private ip", "public ip", "lifecycle", "uptime",
                "expires in"):
        t.add_column(col)
    for r in rows:
        t.add_row(escape(r["name"]), r["id"], r["type"], r["state"], r["private_ip"] or "-",
                  r["public_ip"] or "-", r["lifecycle"], _age(r["uptime_s"]), _age(r["expires_in_s"]))
    return t


def host_results_table(title: str, results) -> Table:
    t = Table(title=title, title_justify="left")
    t.add_column("node")
    t.add_column("id")
    t.add_column("outcome")
    for r in results:
        t.add_row(r.node.name, r.node.id, "[green]ok[/green]" if r.ok else f"[red]failed[/red]: {escape(r.error)}")
    return t


def summary_table(summary) -> Table:
    t = Table(title="Summary", title_justify="left")
    for col in ("type", "name", "requests", "failures", "rps", "p50 ms", "p95 ms", "p99 ms"):
        t.add_column(col, justify="left" if col in ("type", "name") else "right")
    for e in [*summary.endpoints, summary.total]:
        style = "bold" if e is summary.total else None
        t.add_row(e.method, "Total" if e is summary.total else escape(e.name), str(e.requests),
                  str(e.failures), f"{e.rps:.1f}", f"{e.p50_ms:.0f}", f"{e.p95_ms:.0f}",
                  f"{e.p99_ms:.0f}", style=style)
    return t


def locust_table(view: dict) -> Table:
    t = Table(title="Locust", title_justify="left", show_header=False)
    t.add_column("what")
    t.add_column("value")
    if view.get("error"):
        t.add_row("state", f"unknown ({escape(view['error'])})")
        return t
    t.add_row("state", view["state"])
    if not view["running"]:
        return t
    want = view["workers_expected"]
    workers = f"{view['workers_connected']} of {want} connected" if want else str(view["workers_connected"])
    if view["missing"]:
        workers += f" (missing: {', '.join(view['missing'])})"
    p95 = view.get("p95_ms")
    t.add_row("users", str(view["users"]))
    t.add_row("workers", workers)
    t.add_row("rps", f"{view['total_rps']:.1f}")
    t.add_row("fail ratio", f"{view['fail_ratio'] * 100:.2f}%")
    t.add_row("p95", "-" if p95 is None else f"{p95:.0f} ms")
    cpus = ", ".join(f"{escape(str(w['node'] or w['id']))} {w['cpu'] or 0:.0f}%" for w in view["workers"])
    t.add_row("worker CPU", cpus or "-")
    return t


def status_view(data: dict):
    from rich.console import Group
    parts = []
    if not data["nodes"]:
        return f"stack {data['stack']!r} ({data['provider']}) has no nodes"
    parts.append(nodes_table(f"stack {data['stack']} ({data['provider']})", data["nodes"]))
    if data.get("cost"):
        parts.append(escape(data["cost"]["text"]))
    if data.get("locust"):
        parts.append(locust_table(data["locust"]))
    return Group(*parts)
