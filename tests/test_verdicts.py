"""CI-grade verdicts: checks of one stats entry (`p95[WS rtt]<200ms`), a baseline gate
(`--baseline prev --check 'p95<+10%'`), a JUnit file and $GITHUB_STEP_SUMMARY.

The logic on synthetic summaries; the rest as users run it: the CLI in a subprocess, real Locust
on the local provider, against the built-in target (made slower through its delay switch).
"""
import json
import re
import xml.etree.ElementTree as ET

import junitparser
import pytest

from swarm.errors import UsageError
from swarm.locust.stats import EndpointStats, Summary
from swarm.pipeline.judge import parse_check
from tests.helpers import assert_one_error_line, swarm


def row(method, name, p95=100.0, requests=100, failures=0, rps=10.0):
    return EndpointStats(method, name, requests, failures, rps, p95 / 2, p95 / 2, p95, p95, p95 * 2)


NOW = Summary([row("GET", "/items", 100), row("POST", "/items", 300),
               row("WS", "WS rtt", 60, failures=2), row("WS", "WS connect", 20)],
              row("", "Aggregated", 200, failures=2, rps=40.0))
BASE = Summary([row("GET", "/items", 50), row("POST", "/items", 300), row("WS", "WS rtt", 60)],
               row("", "Aggregated", 100, rps=42.0))


@pytest.mark.parametrize("text, ok, says", [
    ("p95<300ms", True, "actual 200 ms"),                      # unbracketed: the Aggregated row
    ("p95[WS rtt]<50ms", False, "actual 60 ms"),
    ("avg[WS connect]<=10ms", True, "actual 10 ms"),
    ("max[GET /items]<0.2s", False, "actual 200 ms"),
    ("p99[POST /items]<1s", True, "actual 300 ms"),
    ("success[WS rtt]>97.5%", True, "actual 98 %"),
    ("success>99%", False, "actual 98 %"),
    ("fail_ratio[WS rtt]<1%", False, "actual 2 %"),
    ("rps[WS rtt]>=10", True, "actual 10 rps"),
    ("p95[WS rt]<1s", False, "no stats entry named 'WS rt' (names: /items, WS connect, WS rtt)"),
    ("p95<+10%", False, "p95 200 ms vs 100 ms baseline (+100%) >= +10%"),
    ("rps>-5%", True, "rps 40 vs 42 baseline (-4.8%) > -5%"),
    ("p95[GET /items]<+10%", False, "p95[GET /items] 100 ms vs 50 ms baseline (+100%) >= +10%"),
    ("p95[POST /items]<=+0%", True, "p95[POST /items] 300 ms vs 300 ms baseline (+0.0%) <= +0%"),
    ("p95[WS connect]<+10%", False, "the baseline has no stats entry named 'WS connect'"),
])
def test_checks_of_one_stats_entry_and_against_a_baseline(text, ok, says):
    got = parse_check(text).evaluate(NOW, BASE)
    assert (got.ok, got.ambiguous) == (ok, False)
    assert got.says.startswith(says), got.says


def test_a_name_with_several_methods_asks_for_the_method():
    got = parse_check("p95[/items]<1s").evaluate(NOW)
    assert (got.ok, got.ambiguous, got.actual) == (False, True, None)
    assert got.says == "'/items' is 2 stats entries (GET, POST): name the method, e.g. [GET /items]"


@pytest.mark.parametrize("bad, needle", [
    ("p95[]<1s", "[] names no stats entry"),
    ("cpu[worker-1]<90%", "cpu is the nodes' peak"),
    ("p95<+10ms", "a relative check is a signed percent"),
    ("p95<10%", "p95 takes 'ms' or 's' (or a signed percent: p95<+10%)"),
    ("cpu<+5%", "cpu has no baseline"),
    ("success>101%", "success is a fraction"),
    ("p95[WS rtt]<<3ms", "write METRIC[NAME] OP VALUE"),
])
def test_bad_checks_say_what_is_wrong(bad, needle):
    with pytest.raises(UsageError, match=re.escape(needle)):
        parse_check(bad)


def test_profile_checks_name_their_table():
    with pytest.raises(UsageError, match=re.escape("bad [profiles.light.checks] 'avg<fast'")):
        parse_check("avg<fast", where="[profiles.light.checks]")


# ---- real runs ----

# One name under two methods (for `[METHOD NAME]`), and a plain one; a steady, light load.
NAMED = """from locust import HttpUser, constant, task


class Reader(HttpUser):
    wait_time = constant(0.05)

    @task
    def read(self):
        self.client.get("/kandus/1", name="/kandus")

    @task
    def save(self):
        self.client.post("/kandus", json={"title": "t"}, name="/kandus")

    @task
    def health(self):
        self.client.get("/health")
"""


def _stack(workdir, cli_env, local_toml):
    local_toml()
    (workdir / "locustfiles" / "named.py").write_text(NAMED)
    assert swarm("up", "master", cwd=workdir, env=cli_env).code == 0
    assert swarm("up", "workers", "-n", "1", cwd=workdir, env=cli_env).code == 0


def _run(workdir, cli_env, target, *args, users="4"):
    return swarm("run", "-H", target.url, "-f", "named.py", "--headless", "-u", users, "-r",
                 users, "-t", "3s", *args, cwd=workdir, env=cli_env, timeout=120)


def _records(workdir):
    return [json.loads(p.read_text()) for p in sorted((workdir / "results" / "t").glob("*/run.json"))]


def test_per_name_checks_junit_and_step_summary_on_a_real_run(workdir, cli_env, local_toml,
                                                              target, tmp_path):
    _stack(workdir, cli_env, local_toml)
    summary_file = tmp_path / "step-summary.md"
    summary_file.write_text("earlier step\n")
    env = {**cli_env, "GITHUB_STEP_SUMMARY": str(summary_file)}
    junit = workdir / "reports" / "load.xml"      # its directory is made
    checks = ["p95<10s", "p95[GET /kandus]<10s", "avg[POST /kandus]<10s", "success[/health]>99%",
              "max[/health]<10s", "rps[/health]>100000", "p95[/nope]<1s", "p95[/kandus]<1s"]
    try:
        res = _run(workdir, env, target, *(a for c in checks for a in ("--check", c)),
                   "--junit", str(junit))
        assert res.code == 1, res.err
        for passed in checks[:5]:
            assert re.search(rf"check {re.escape(passed)}: pass \(actual [0-9.]+ (ms|%)\)", res.err), res.err
        assert re.search(r"check rps\[/health\]>100000: FAIL \(actual [0-9.]+ rps\)", res.err)
        assert ("check p95[/nope]<1s: FAIL (no stats entry named '/nope' (names: /health, "
                "/kandus))") in res.err
        assert ("check p95[/kandus]<1s: ERROR ('/kandus' is 2 stats entries (GET, POST): name "
                "the method, e.g. [GET /kandus])") in res.err
        assert res.err_lines[-1] == ("error: the run failed: 3 check(s) failed: "
                                     "rps[/health]>100000, p95[/nope]<1s, p95[/kandus]<1s")
        [record] = _records(workdir)
        run_id = next((workdir / "results" / "t").iterdir()).name
        assert [c["ok"] for c in record["checks"]] == [True] * 5 + [False] * 3
        assert record["checks"][3]["name"] == "/health" and record["verdict"] == "fail"

        # JUnit: what a JUnit parser reads
        xml = junitparser.JUnitXml.fromfile(str(junit))
        [suite] = list(xml)
        assert suite.name == f"t/{run_id}"
        cases = {c.name: c for c in suite}
        assert list(cases) == [*checks, "locust run"]
        failed = {n for n, c in cases.items() if any(isinstance(r, junitparser.Failure) for r in c.result)}
        errors = {n for n, c in cases.items() if any(isinstance(r, junitparser.Error) for r in c.result)}
        assert failed == {"rps[/health]>100000", "p95[/nope]<1s"}     # one per failed check
        assert errors == {"p95[/kandus]<1s"}
        assert all(cases[n].is_passed for n in [*checks[:5], "locust run"])
        assert (suite.tests, suite.failures, suite.errors) == (9, 2, 1)
        msg = cases["rps[/health]>100000"].result[0].message
        assert re.fullmatch(r"rps\[/health\]>100000: actual [0-9.]+ rps", msg), msg
        # and plain ElementTree, as any CI reads it
        root = ET.parse(junit).getroot()
        assert root.tag == "testsuites" and root.get("failures") == "2"
        assert root.find("testsuite/properties/property[@name='verdict']").get("value") == "fail"

        # $GITHUB_STEP_SUMMARY: appended to, with the verdict, the checks and per-name figures
        text = summary_file.read_text()
        assert text.startswith("earlier step\n### swarm run `t/")
        assert "❌ FAIL" in text.splitlines()[1]
        assert "| `p95[/nope]<1s` | ❌ FAIL | no stats entry named '/nope'" in text
        assert "| `p95[/kandus]<1s` | ⚠️ error |" in text
        assert "| `p95<10s` | ✅ pass | actual" in text
        for name in ("| GET | /kandus |", "| POST | /kandus |", "| GET | /health |", "|  | Total |"):
            assert name in text, text

        res = swarm("results", "--last", cwd=workdir, env=cli_env)
        assert "check p95[/nope]<1s: FAIL (no stats entry named '/nope'" in res.err, res.err
    finally:
        swarm("down", cwd=workdir, env=cli_env)


def test_baseline_regression_fails_naming_both_values(workdir, cli_env, local_toml, target):
    _stack(workdir, cli_env, local_toml)
    gate = ("--baseline", "prev", "--check", "p95<+10%", "--check", "rps>-5%")
    try:
        res = _run(workdir, cli_env, target)
        assert res.code == 0, res.err
        [first] = _records(workdir)
        first_id = next((workdir / "results" / "t").iterdir()).name

        target.set_delay(250)            # the target got slower: every response 250 ms later
        res = _run(workdir, cli_env, target, *gate)
        assert res.code == 1, res.err
        m = re.search(r"check p95<\+10%: FAIL \(p95 ([0-9.]+) ms vs ([0-9.]+) ms baseline "
                      r"\(\+([0-9]+)%\) >= \+10%\)", res.err)
        assert m, res.err
        now, base = float(m.group(1)), float(m.group(2))
        assert base == first["summary"]["total"]["p95_ms"] and now >= 250 > base
        assert re.search(r"check rps>-5%: FAIL \(rps [0-9.]+ vs [0-9.]+ baseline \(-[0-9]+%\) "
                         r"<= -5%\)", res.err), res.err
        assert f"baseline: {first_id}" in res.err
        assert res.err_lines[-1] == "error: the run failed: 2 check(s) failed: p95<+10%, rps>-5%"
        second = _records(workdir)[-1]
        assert (second["baseline"], second["verdict"]) == (first_id, "fail")
        assert second["checks"][0]["baseline"] == base and second["checks"][0]["relative"]

        # another load is not comparable: refused before anything starts, in one line
        res = _run(workdir, cli_env, target, *gate, users="3")
        assert_one_error_line(res, 2, f"baseline {first_id} is not comparable with this run",
                              "users 4 vs 3", "--baseline-anyway")
        assert len(_records(workdir)) == 2
        # ... unless asked; `prev` is still the first run: a failed run is never the yardstick
        target.set_delay(0)
        res = _run(workdir, cli_env, target, *gate[:2], "--baseline-anyway", "--check",
                   "p95<+100000%", users="3")
        assert res.code == 0, res.err
        assert f"baseline {first_id} is not comparable with this run (baseline vs now: users 4 " \
               "vs 3): compared all the same (--baseline-anyway)" in res.err
        third = _records(workdir)[-1]
        assert (third["baseline"], third["baseline_differences"]) == (first_id, ["users 4 vs 3"])
    finally:
        swarm("down", cwd=workdir, env=cli_env)


def test_a_run_that_cannot_be_judged_is_an_error_case(workdir, cli_env, local_toml, target,
                                                     tmp_path):
    """No baseline yet: one error line before anything starts, and CI's files say so."""
    local_toml()
    summary_file = tmp_path / "step-summary.md"
    env = {**cli_env, "GITHUB_STEP_SUMMARY": str(summary_file)}
    res = swarm("run", "-H", target.url, "-f", "viral_load.py", "--headless", "-t", "3s",
                "--baseline", "prev", "--check", "p95<+10%", "--junit", "out.xml",
                cwd=workdir, env=env)
    assert_one_error_line(res, 2, "--baseline prev: stack 't' has no passed run in results/t/")
    [suite] = list(junitparser.JUnitXml.fromfile(str(workdir / "out.xml")))
    cases = {c.name: c for c in suite}
    assert list(cases) == ["p95<+10%", "locust run"]
    assert isinstance(cases["p95<+10%"].result[0], junitparser.Skipped)
    [err] = cases["locust run"].result
    assert isinstance(err, junitparser.Error) and "has no passed run" in err.message
    assert "⚠️ error" in summary_file.read_text().splitlines()[0]
