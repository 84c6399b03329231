"""`swarm results --compare ... --html FILE` and `--trend --html FILE`: one self-contained page.

The figures go into the page as one JSON blob (`<script type="application/json"
id="swarm-data">`) that the charts read, so what a reader sees and what a test checks are the
same numbers. The charts are plotly.js, read from the installed plotly package and inlined:
the page opens offline, with no CDN. Every text from a run (ids, stats names) is escaped.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from string import Template
from typing import Any

from swarm.errors import SwarmError
from swarm.pipeline.charts import Comparison, Trend

PAGE = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>$title</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
.warn { background: #fff3cd; border: 1px solid #e0b000; padding: .6em 1em; }
.ok { background: #e7f5e9; border: 1px solid #5a5; padding: .6em 1em; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
td:first-child, th:first-child { text-align: left; }
.chart { width: 100%; max-width: 1100px; height: 380px; }
</style>
<script>$plotly</script>
</head>
<body>
<h1>$title</h1>
$banner
$table
$charts
<script type="application/json" id="swarm-data">$data</script>
<script>
$script
</script>
</body>
</html>
""")

COMPARE_JS = """
const D = JSON.parse(document.getElementById("swarm-data").textContent);
const drawn = [];
const fig = (id, traces, layout) =>
  drawn.push(Plotly.newPlot(id, traces, layout, {responsive: true}));
const metric = (m, r) => D.names.map(n => (r.rows.find(x => x.name === n) || {})[m] ?? null);
for (const m of ["p50_ms", "p95_ms", "p99_ms", "rps"]) {
  fig("chart-" + m, D.runs.map(r => ({type: "bar", name: r.id, x: D.names, y: metric(m, r)})),
      {title: {text: m.replace("_ms", " (ms)") + " per stats name"}, barmode: "group"});
}
const curve = (key) => D.runs.map(r => ({type: "scatter", mode: "lines", name: r.id,
  x: r.history.map(p => p.t), y: r.history.map(p => p[key])}));
fig("chart-p95-time", curve("p95_ms"), {title: {text: "p95 (ms) over the run"},
    xaxis: {title: {text: "s"}}});
fig("chart-rps-time", curve("rps"), {title: {text: "requests/s over the run"},
    xaxis: {title: {text: "s"}}});
"""

TREND_JS = """
const D = JSON.parse(document.getElementById("swarm-data").textContent);
const x = D.runs.map(r => r.id);
const drawn = [];
const fig = (id, key, title) => drawn.push(Plotly.newPlot(id, [{type: "scatter",
  mode: "lines+markers", name: key, x: x, y: D.runs.map(r => r[key])}], {title: {text: title},
  xaxis: {type: "category"}}, {responsive: true}));
fig("chart-p95", "p95_ms", "p95 (ms) per run");
fig("chart-rps", "rps", "requests/s per run");
fig("chart-failures", "failures", "failed requests per run");
"""

# after every chart is drawn: the count of plotly's SVG roots, in the DOM and on the console
DONE_JS = """
Promise.all(drawn).then(() => {
  const n = document.querySelectorAll(".chart .main-svg").length;
  document.body.dataset.rendered = n;
  console.log("swarm-charts rendered " + n);
});
"""

COMPARE_CHARTS = ("p50_ms", "p95_ms", "p99_ms", "rps", "p95-time", "rps-time")
TREND_CHARTS = ("p95", "rps", "failures")


def _blob(data: dict[str, Any]) -> str:
    # inside <script>, only `</` could end the element early: \\u003c keeps the JSON the same
    return json.dumps(data).replace("<", "\\u003c")


def _charts(ids: tuple[str, ...]) -> str:
    return "\n".join(f'<div class="chart" id="chart-{i}"></div>' for i in ids)


def _table(head: list[str], rows: list[list[Any]]) -> str:
    def cells(tag: str, row: list[Any]) -> str:
        return "".join(f"<{tag}>{html.escape(str(c))}</{tag}>" for c in row)

    body = "\n".join(f"<tr>{cells('td', r)}</tr>" for r in rows)
    return f"<table>\n<tr>{cells('th', head)}</tr>\n{body}\n</table>"


def _page(title: str, banner: str, table: str, charts: str, data: dict[str, Any], js: str) -> str:
    # here, not at the top: every command imports this module, few write a report (14 ms)
    from plotly.offline import get_plotlyjs  # type: ignore[import-untyped]

    return PAGE.substitute(
        title=html.escape(title),
        plotly=get_plotlyjs(),
        banner=banner,
        table=table,
        charts=charts,
        data=_blob(data),
        script=js + DONE_JS,
    )


def compare_page(c: Comparison) -> str:
    if c.not_comparable:
        items = "".join(f"<li>{html.escape(d)}</li>" for d in c.not_comparable)
        banner = (
            f'<div class="warn" id="not-comparable"><strong>Not comparable</strong> '
            f"(each run against {html.escape(c.runs[0].id)}):<ul>{items}</ul></div>"
        )
    else:
        banner = '<p class="ok" id="comparable">Comparable: same locustfile, users, run time, '
        banner += "host and workers.</p>"
    head = ["stats name"] + [f"{m} {r.id}" for m in ("p50", "p95", "p99", "rps") for r in c.runs]
    by_run = [{row.name: row for row in r.rows} for r in c.runs]
    rows = [
        [n]
        + [
            getattr(b[n], m) if n in b else ""
            for m in ("p50_ms", "p95_ms", "p99_ms", "rps")
            for b in by_run
        ]
        for n in c.names
    ]
    title = f"swarm: {c.stack}: {' vs '.join(r.id for r in c.runs)}"
    return _page(
        title, banner, _table(head, rows), _charts(COMPARE_CHARTS), c.to_json(), COMPARE_JS
    )


def trend_page(t: Trend) -> str:
    head = ["run", "verdict", "requests", "failures", "rps", "p95 (ms)"]
    rows = [[p.id, p.verdict or "", p.requests, p.failures, p.rps, p.p95_ms] for p in t.runs]
    title = f"swarm: {t.stack}: the last {len(t.runs)} run(s)"
    return _page(title, "", _table(head, rows), _charts(TREND_CHARTS), t.to_json(), TREND_JS)


def write(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as e:
        raise SwarmError(f"cannot write {path}: {e.strerror or e}") from e
