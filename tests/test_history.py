"""`swarm results`: list past runs, show one again, compare two, fetch the latest again.

Synthetic run.json files for the logic (no Locust), and one real local cycle for the whole path.
"""
import json
import shutil

import pytest

from swarm.pipeline import history
from swarm.errors import SwarmError, UsageError
from tests.helpers import assert_one_error_line, swarm

SHA = "a" * 64


def ep(name, requests=100, failures=0, rps=10.0, avg=20.0, p50=15.0, p95=40.0, p99=80.0,
       method="GET"):
    return {"method": method, "name": name, "requests": requests, "failures": failures,
            "rps": rps, "avg_ms": avg, "p50_ms": p50, "p95_ms": p95, "p99_ms": p99,
            "max_ms": p99 * 2, "fail_ratio": failures / requests if requests else 0.0}


def make_run(root, run_id, stack="t", total=None, endpoints=None, checks=(), **rec):
    total = total or ep("Aggregated", 300, rps=30.0, method="")
    endpoints = endpoints if endpoints is not None else [ep("/a", 200, rps=20.0), ep("/b")]
    d = root / stack / run_id
    d.mkdir(parents=True)
    record = {"stack": stack, "provider": "local", "locustfile": "viral_load.py",
              "files": {"viral_load.py": SHA}, "host": "http://127.0.0.1:9", "users": 10,
              "run_time": "2s", "instances": {"workers": 2}, "workers_expected": 2,
              "started_at": f"2024-05-0{run_id[-1]}T10:00:00+00:00", "exit_code": 0,
              "checks": list(checks),
              "summary": {"total": total, "endpoints": endpoints, "workers_cpu": {}}}
    record.update(rec)
    (d / "run.json").write_text(json.dumps(record))
    return d


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "results"
    make_run(r, "20240501T100000Z-1", users=10)
    make_run(r, "20240502T100000Z-2", total=ep("Aggregated", 330, failures=33, rps=33.0, p95=50.0,
                                                 method=""),
             endpoints=[ep("/a", 220, rps=22.0, p95=30.0), ep("/c")],
             checks=[{"check": "p95<1s", "ok": True, "actual": 50.0},
                     {"check": "rps>100", "ok": False, "actual": 33.0}])
    (r / "t" / "20240503T100000Z-3").mkdir()                       # no run.json: a crash
    (r / "t" / "20240503T100000Z-3" / "locust.log").write_text("boom")
    (r / "t" / "20240504T100000Z-4").mkdir()
    (r / "t" / "20240504T100000Z-4" / "run.json").write_text("{not json")
    make_run(r, "20240501T000000Z-9", stack="other")
    return r


def test_list_runs_oldest_first_with_incomplete_ones(root):
    runs = history.list_runs(root, "t")
    assert [r.id for r in runs] == ["20240501T100000Z-1", "20240502T100000Z-2",
                                    "20240503T100000Z-3", "20240504T100000Z-4"]
    assert [r.complete for r in runs] == [True, True, False, False]
    assert runs[1].summary.total.requests == 330 and runs[2].summary is None
    row = history.run_row(runs[1]).to_json()
    assert (row["checks_passed"], row["checks_failed"], row["fail_ratio"]) == (1, 1, 0.1)
    assert len(history.list_runs(root, None)) == 5
    assert history.list_runs(root, "nope") == []


def test_a_missing_run_json_falls_back_to_the_stats_csv(root):
    d = root / "t" / "20240503T100000Z-3"
    (d / "locust_stats.csv").write_text(
        "Type,Name,Request Count,Failure Count,Average Response Time,Requests/s,50%,95%,99%,"
        "Max Response Time\nGET,/a,7,1,5,3.5,4,9,12,20\n,Aggregated,7,1,5,3.5,4,9,12,20\n")
    run = history.load_run(d)
    assert not run.complete and run.summary.total.requests == 7
    assert run.summary.endpoints[0].name == "/a"


def test_resolve_by_id_prefix_path_and_alias(root):
    runs = history.list_runs(root, "t")
    assert history.resolve(runs, "20240502T100000Z-2", "t").id == "20240502T100000Z-2"
    assert history.resolve(runs, "20240501", "t").id == "20240501T100000Z-1"
    assert history.resolve(runs, "last", "t").id == "20240504T100000Z-4"
    assert history.resolve(runs, "prev", "t").id == "20240503T100000Z-3"
    assert history.resolve(runs, str(root / "other" / "20240501T000000Z-9"), "t").stack == "other"
    with pytest.raises(UsageError, match=r"ambiguous: 4 runs start with it \(20240501T100000Z-1, 20240502"):
        history.resolve(runs, "2024050", "t")
    with pytest.raises(UsageError, match=r"no run 'zzz' of stack 't' \(runs: 20240501T100000Z-1, "):
        history.resolve(runs, "zzz", "t")
    with pytest.raises(UsageError, match="no 'prev' run"):
        history.resolve(runs[:1], "prev", "t")


def test_compare_deltas_and_endpoints_in_both(root):
    a, b = (history.load_run(root / "t" / i) for i in ("20240501T100000Z-1", "20240502T100000Z-2"))
    rows = [r.to_json() for r in history.compare(a, b)]
    assert {r["endpoint"] for r in rows} == {"Total", "GET /a"}          # /b and /c: one side only
    by = {(r["endpoint"], r["metric"]): r for r in rows}
    assert by[("Total", "rps")] == {"endpoint": "Total", "metric": "rps", "a": 30.0, "b": 33.0,
                                    "delta": pytest.approx(3.0), "delta_pct": 10.0}
    assert by[("Total", "p95_ms")]["delta"] == 10.0 and by[("Total", "p95_ms")]["delta_pct"] == 25.0
    assert by[("Total", "fail_ratio")]["a"] == 0.0 and by[("Total", "fail_ratio")]["delta_pct"] is None
    assert by[("GET /a", "p95_ms")]["delta_pct"] == -25.0
    assert [r["metric"] for r in rows[:7]] == ["rps", "p50_ms", "p95_ms", "p99_ms", "avg_ms",
                                               "fail_ratio", "requests"]
    with pytest.raises(SwarmError, match="no statistics"):
        history.compare(a, history.load_run(root / "t" / "20240503T100000Z-3"))


def test_differences_name_what_makes_runs_not_comparable(root):
    a = history.load_run(root / "t" / "20240501T100000Z-1")
    assert history.differences(a, a) == []
    b = history.load_run(make_run(root, "20240509T000000Z-5", users=50, host="http://other:1",
                                  files={"viral_load.py": "b" * 64}, instances={"workers": 3}))
    assert history.differences(a, b) == [
        "locustfile sha256 aaaaaaaaaaaa vs bbbbbbbbbbbb", "users 10 vs 50",
        "host http://127.0.0.1:9 vs http://other:1", "workers 2 vs 3"]


# ---- through the CLI, on synthetic results ----

def copy_results(root, workdir):
    shutil.copytree(root, workdir / "results")


def test_cli_lists_runs_and_incomplete_ones(root, workdir, cli_env, local_toml):
    local_toml()
    copy_results(root, workdir)
    res = swarm("results", cwd=workdir, env=cli_env)
    assert res.code == 0, res.err
    lines = res.out.splitlines()
    assert "runs of stack t" in lines[0]
    rows = [l for l in lines if "2024050" in l]
    assert [l.split()[1] for l in rows] == ["20240501T100000Z-1", "20240502T100000Z-2",
                                            "20240503T100000Z-3", "20240504T100000Z-4"]
    assert "2024-05-01T10:00:00Z" in rows[0] and "viral_load.py" in rows[0]
    assert "1 ok, 1 failed" in rows[1] and "10.00" in rows[1]
    assert "incomplete" in rows[2] and "incomplete" in rows[3]
    res = swarm("results", "--all-stacks", cwd=workdir, env=cli_env)
    assert res.code == 0 and "20240501T000000Z-9" in res.out and "other" in res.out
    data = json.loads(swarm("results", "--json", cwd=workdir, env=cli_env).out)
    assert data["stack"] == "t" and len(data["runs"]) == 4
    assert data["runs"][1]["rps"] == 33.0 and data["runs"][2]["complete"] is False


def test_cli_shows_one_run_again(root, workdir, cli_env, local_toml):
    local_toml()
    copy_results(root, workdir)
    res = swarm("results", "20240502", cwd=workdir, env=cli_env)
    assert res.code == 0, res.err
    assert "Summary" in res.out and "Total" in res.out and "330" in res.out and "/c" in res.out
    assert "check rps>100: FAIL (actual 33 rps)" in res.err and "check p95<1s: pass" in res.err
    assert "results: results/t/20240502T100000Z-2" in res.err
    res = swarm("results", "--last", cwd=workdir, env=cli_env)
    assert res.code == 0 and "incomplete" in res.err and "no statistics" in res.err
    data = json.loads(swarm("results", "20240501T1", "--json", cwd=workdir, env=cli_env).out)
    assert data["id"] == "20240501T100000Z-1" and data["summary"]["total"]["requests"] == 300
    assert data["record"]["users"] == 10


def test_cli_compare_table_json_and_warning(root, workdir, cli_env, local_toml):
    local_toml()
    make_run(root, "20240509T000000Z-5", users=50, run_time="10s")
    copy_results(root, workdir)
    res = swarm("results", "--compare", "20240501", "20240502", cwd=workdir, env=cli_env)
    assert res.code == 0, res.err
    assert "A = 20240501T100000Z-1   B = 20240502T100000Z-2" in res.out
    rps = next(l for l in res.out.splitlines() if " rps " in l)
    assert "30.0" in rps and "33.0" in rps and "+3.0" in rps and "+10.0%" in rps
    assert "GET /a" in res.out and "/c" not in res.out
    assert "not comparable" not in res.err
    res = swarm("results", "--compare", "20240501", "20240509", cwd=workdir, env=cli_env)
    assert res.code == 0 and res.err_lines == [
        "! not comparable: users 10 vs 50; run_time 2s vs 10s"]
    data = json.loads(swarm("results", "--compare", "20240501", "20240509", "--json",
                            cwd=workdir, env=cli_env).out)
    assert data["comparable"] is False and data["differences"] == ["users 10 vs 50",
                                                                  "run_time 2s vs 10s"]
    assert len(data["rows"]) == 7 * 3 and data["rows"][0]["metric"] == "rps"


@pytest.mark.parametrize("args, code, needle", [
    (["nope"], 2, "no run 'nope' of stack 't' (runs: 20240501T100000Z-1, 20240502T100000Z-2"),
    (["--compare", "last", "zzz"], 2, "no run 'zzz'"),
    (["2024", "--last"], 2, "give one of RUN, --last, --compare A B or --fetch"),
    (["--fetch", "--last"], 2, "give one of"),
    (["--last", "--all-stacks"], 2, "--all-stacks only lists runs"),
    (["--compare", "20240501", "20240503"], 1, "run 20240503T100000Z-3 has no statistics"),
    (["--fetch"], 2, "stack 't' has no master: nothing to fetch"),
])
def test_cli_bad_input_is_one_error_line(root, workdir, cli_env, local_toml, args, code, needle):
    local_toml()
    copy_results(root, workdir)
    assert_one_error_line(swarm("results", *args, cwd=workdir, env=cli_env), code, needle)


def test_cli_with_no_runs_yet(workdir, cli_env, local_toml):
    local_toml()
    res = swarm("results", cwd=workdir, env=cli_env)
    assert res.code == 0 and res.out == "" and "no runs of stack 't'" in res.err
    assert json.loads(swarm("results", "--json", cwd=workdir, env=cli_env).out)["runs"] == []
    assert_one_error_line(swarm("results", "--last", cwd=workdir, env=cli_env), 2, "no 'last' run")


# ---- a real local cycle: two runs, list, show, compare, then fetch after losing the results ----

def test_real_runs_listed_compared_and_fetched_again(workdir, cli_env, local_toml, target):
    local_toml()
    assert swarm("up", "master", cwd=workdir, env=cli_env).code == 0
    assert swarm("up", "workers", "-n", "1", cwd=workdir, env=cli_env).code == 0
    try:
        for users in ("3", "4"):
            res = swarm("run", "-H", target.url, "-f", "viral_load.py", "--headless", "-u", users,
                        "-t", "2s", "--check", "p95<10s", cwd=workdir, env=cli_env, timeout=120)
            assert res.code == 0, res.err
        listed = json.loads(swarm("results", "--json", cwd=workdir, env=cli_env).out)["runs"]
        assert [r["users"] for r in listed] == [3, 4]
        assert all(r["complete"] and r["requests"] > 0 and r["checks_passed"] == 1 for r in listed)
        res = swarm("results", cwd=workdir, env=cli_env)
        assert res.code == 0 and listed[0]["id"] in res.out and "viral_load.py" in res.out

        res = swarm("results", "--last", cwd=workdir, env=cli_env)
        assert res.code == 0 and "Total" in res.out and str(listed[1]["requests"]) in res.out
        assert "check p95<10s: pass" in res.err

        res = swarm("results", "--compare", "prev", "last", cwd=workdir, env=cli_env)
        assert res.code == 0, res.err
        assert f"A = {listed[0]['id']}   B = {listed[1]['id']}" in res.out
        assert res.err_lines == ["! not comparable: users 3 vs 4"]

        # The controller lost its copy (say, a full disk): the master still has the last run.
        shutil.rmtree(workdir / "results")
        res = swarm("results", "--fetch", cwd=workdir, env=cli_env, timeout=120)
        assert res.code == 0, res.err
        assert "Total" in res.out
        runs = list((workdir / "results" / "t").iterdir())
        assert len(runs) == 1 and runs[0].name.endswith("-fetched")
        for name in ("locust_stats.csv", "report.html", "stats.json", "logs/master.log",
                     "logs/worker-1.log", "run.json"):
            assert (runs[0] / name).is_file(), name
        fetched = json.loads(swarm("results", "--last", "--json", cwd=workdir, env=cli_env).out)
        assert fetched["record"]["fetched"] is True and fetched["record"]["exit_code"] == 0
        assert fetched["summary"]["total"]["requests"] == listed[1]["requests"]
        assert fetched["record"]["started_at"] >= listed[1]["started_at"]
        res = swarm("results", cwd=workdir, env=cli_env)
        assert fetched["id"] in res.out and "incomplete" not in res.out

        # A new run clears the master's results: nothing left to fetch, said in one line.
        res = swarm("run", "-H", target.url, "-f", "viral_load.py", "-u", "1", cwd=workdir,
                    env=cli_env)
        assert res.code == 0, res.err
        assert_one_error_line(swarm("results", "--fetch", cwd=workdir, env=cli_env), 1,
                              "has no results to fetch")
    finally:
        assert swarm("down", cwd=workdir, env=cli_env).code == 0
