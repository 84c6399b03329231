"""`swarm results --compare A B [C...] --html` and `--trend --html`: pages people look at.

Three short real runs (local provider, real Locust, the built-in target), the pages written by
the CLI in a subprocess, then opened in headless Chromium (Debian's package, as CI installs it
through tests/system-deps.sh): no console message but the page's own "rendered" line, every
chart drawn (plotly's SVG root in each chart div), and the page's data blob equal to the runs'
own files (locust_stats.csv, locust_stats_history.csv, run.json), read here with csv/json.
"""
import csv
import json
import os
import re
import shutil
import subprocess

import pytest

from tests.helpers import REPO, assert_one_error_line, free_port, swarm
from tests.test_verdicts import NAMED

COMPARE_CHARTS = ["p50_ms", "p95_ms", "p99_ms", "rps", "p95-time", "rps-time"]
TREND_CHARTS = ["p95", "rps", "failures"]
BLOB = re.compile(r'<script type="application/json" id="swarm-data">(.*?)</script>', re.S)
CHROMIUM = shutil.which("chromium")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project with three runs of stack t: two alike (2 users), one with 3 users. 5 s each:
    workers report every 3 s, so a shorter run has no figures in its history until the end."""
    from swarm.demo import target as target_mod

    tmp = tmp_path_factory.mktemp("html")
    work = tmp / "work"
    work.mkdir()
    shutil.copytree(REPO / "locustfiles", work / "locustfiles",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "bootstrap", work / "bootstrap")
    (work / "locustfiles" / "named.py").write_text(NAMED)
    (work / "swarm.toml").write_text(
        f'[stack]\nname = "t"\nprovider = "local"\n'
        f"[locust]\nweb_port = {free_port()}\nmaster_port = {free_port()}\n")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "SWARM_", "GITHUB_STEP_SUMMARY"))}
    env.update(SWARM_STATE_DIR=str(tmp / "state"), PYTHONPATH=str(REPO), NO_COLOR="1")
    srv = target_mod.start("127.0.0.1", 0)
    try:
        assert swarm("up", "master", cwd=work, env=env).code == 0
        assert swarm("up", "workers", "-n", "1", cwd=work, env=env).code == 0
        for users in ("2", "2", "3"):
            res = swarm("run", "-H", srv.url, "-f", "named.py", "--headless", "-u", users,
                        "-r", users, "-t", "8s", cwd=work, env=env, timeout=120)
            assert res.code == 0, res.err
    finally:
        swarm("down", cwd=work, env=env)
        srv.stop()
    runs = sorted(p for p in (work / "results" / "t").iterdir() if p.is_dir())
    assert len(runs) == 3
    return work, env, runs


def _page(project, *args):
    work, env, _ = project
    out = work / "pages" / f"{len(list(work.glob('pages/*')))}.html"
    res = swarm("results", *args, "--html", str(out), cwd=work, env=env)
    assert res.code == 0, res.err
    assert f"wrote {out}" in res.err
    return out


def _blob(text):
    return json.loads(BLOB.search(text).group(1))


def _stats_csv(run):
    with open(run / "locust_stats.csv") as f:
        rows = list(csv.DictReader(f))
    return {("Total" if r["Name"] == "Aggregated" else f"{r['Type']} {r['Name']}".strip()): r
            for r in rows}


def _assert_compare_figures(data, runs):
    assert data["kind"] == "compare"
    assert [r["id"] for r in data["runs"]] == [r.name for r in runs]
    for fig, run in zip(data["runs"], runs):
        stats = _stats_csv(run)
        assert {row["name"] for row in fig["rows"]} == set(stats)
        for row in fig["rows"]:
            want = stats[row["name"]]
            assert row["requests"] == int(want["Request Count"])
            assert row["failures"] == int(want["Failure Count"])
            assert row["p50_ms"] == float(want["50%"])
            assert row["p95_ms"] == float(want["95%"])
            assert row["p99_ms"] == float(want["99%"])
            assert row["rps"] == round(float(want["Requests/s"]), 2)
        assert fig["users"] == json.loads((run / "run.json").read_text())["users"]
        with open(run / "locust_stats_history.csv") as f:
            hist = [r for r in csv.DictReader(f) if r["Name"] == "Aggregated"]
        assert len(fig["history"]) == len(hist) >= 2
        t0 = float(hist[0]["Timestamp"])
        for p, r in zip(fig["history"], hist):
            assert p["t"] == float(r["Timestamp"]) - t0
            assert p["rps"] == float(r["Requests/s"]) and p["users"] == int(r["User Count"])
            assert p["p95_ms"] == (None if r["95%"] == "N/A" else float(r["95%"]))
        assert any(p["rps"] > 0 for p in fig["history"])


def _assert_trend_figures(data, runs):
    assert data["kind"] == "trend"
    assert [p["id"] for p in data["runs"]] == [r.name for r in runs]
    for p, run in zip(data["runs"], runs):
        total = json.loads((run / "run.json").read_text())["summary"]["total"]
        assert (p["p95_ms"], p["rps"], p["failures"], p["requests"]) == (
            total["p95_ms"], total["rps"], total["failures"], total["requests"])
        assert p["verdict"] == "pass"


def test_pages_hold_the_runs_figures_and_say_what_is_not_comparable(project):
    work, env, runs = project
    alike = _page(project, "--compare", runs[0].name, runs[1].name).read_text()
    data = _blob(alike)
    _assert_compare_figures(data, runs[:2])
    assert data["not_comparable"] == [] and 'id="comparable"' in alike
    assert not re.search(r"<script[^>]* src=|<link", alike)    # self-contained: plotly inlined

    three = _page(project, "--compare", *(r.name for r in runs)).read_text()
    data = _blob(three)
    _assert_compare_figures(data, runs)
    assert data["not_comparable"] == [f"{runs[2].name}: users 2 vs 3"]
    body = three.split("<body>", 1)[1]
    assert body.index('id="not-comparable"') < body.index("<table>")   # stated at the top
    assert f"<li>{runs[2].name}: users 2 vs 3</li>" in body

    _assert_trend_figures(_blob(_page(project, "--trend").read_text()), runs)
    _assert_trend_figures(_blob(_page(project, "--trend", "--last", "2").read_text()), runs[1:])


@pytest.mark.parametrize("args, needle", [
    (["--html", "x.html"], "--html FILE writes --compare A B [C...] or --trend [--last N]"),
    (["--trend", "--json", "--html", "x.html"], "--html FILE writes --compare A B [C...]"),
    (["--trend", "20261201", "--html", "x.html"], "--trend charts the stack's past runs"),
    (["--trend", "--last", "0", "--html", "x.html"], "--last 0: give a count of runs"),
    (["--compare", "last", "--html", "x.html"], "--compare takes two runs or more"),
    (["--compare", "last", "last", "--html", "x.html"], "--compare names one run twice"),
    (["--compare", "a", "b", "c"], "--compare A B takes two runs (more with --html FILE)"),
    (["--last", "3"], "--last 3: a count of runs goes with --trend"),
])
def test_bad_page_requests_say_what_is_wrong(project, args, needle):
    work, env, _ = project
    assert_one_error_line(swarm("results", *args, cwd=work, env=env), 2, needle)
    assert not (work / "x.html").exists()


def _chromium(page):
    """The DOM after the scripts ran, and every console message the page logged."""
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
         "--v=0", "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # Chromium's own notes (a fallback font of its chrome:// pages) have another source
    console = re.findall(rf":CONSOLE[^\]]*\] (.*), source: {re.escape(page.as_uri())}",
                         proc.stderr)
    return proc.stdout, console


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (sh tests/system-deps.sh)")
def test_pages_render_in_headless_chromium(project, tmp_path):
    _, _, runs = project
    # the console is really read: a page's error shows up
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>nope();</script></body></html>")
    assert any("Uncaught ReferenceError: nope is not defined" in m for m in _chromium(bad)[1])

    for args, charts, check, shown in [
        (["--compare", *(r.name for r in runs)], COMPARE_CHARTS,
         lambda d: _assert_compare_figures(d, runs), f"<li>{runs[2].name}: users 2 vs 3</li>"),
        (["--trend"], TREND_CHARTS, lambda d: _assert_trend_figures(d, runs), "<table>"),
    ]:
        dom, console = _chromium(_page(project, *args))
        n = 3 * len(charts)            # plotly draws three SVG roots per chart
        assert console == [f'"swarm-charts rendered {n}"']
        assert f'data-rendered="{n}"' in dom
        for chart in charts:
            div = re.search(rf'<div class="chart[^"]*" id="chart-{chart}".*?</svg>', dom, re.S)
            assert div and 'class="main-svg"' in div.group(0), chart
        check(_blob(dom))          # the figures the charts were drawn from, as the page holds them
        assert shown in dom
