"""The local provider end to end, through the CLI as a user runs it, with real Locust."""
import json
import re

import pytest

from tests.helpers import assert_one_error_line, controller_until_exit, processes_under, swarm
from tests.reliability import poll


def status(workdir, env) -> list[dict]:
    res = swarm("status", "--json", cwd=workdir, env=env)
    assert res.code == 0, res.err
    return json.loads(res.out)["nodes"]


def test_full_cycle_up_run_killall_down(workdir, cli_env, local_toml, target, tmp_path):
    local_toml()
    state = tmp_path / "state"
    assert swarm("up", "master", cwd=workdir, env=cli_env).code == 0
    res = swarm("up", "workers", "-n", "2", cwd=workdir, env=cli_env)
    assert res.code == 0, res.err
    assert "bootstrap.sh is not run here" in res.err
    assert sorted(n["name"] for n in status(workdir, cli_env)) == ["master", "worker-1", "worker-2"]

    res = swarm("run", "-H", target.url, "-f", "viral_load.py", "--headless", "-u", "10", "-r", "10",
                "-t", "4s", cwd=workdir, env=cli_env, timeout=120)
    assert res.code == 0, res.err
    assert "2 of 2 worker process(es) connected" in res.err
    runs = list((workdir / "results" / "t").iterdir())
    assert len(runs) == 1
    out = runs[0]
    for name in ("locust_stats.csv", "locust_stats_history.csv", "locust_failures.csv",
                 "locust_exceptions.csv", "report.html", "stats.json", "run.json",
                 "logs/master.log", "logs/worker-1.log", "logs/worker-2.log"):
        assert (out / name).is_file(), name
    record = json.loads((out / "run.json").read_text())
    total = record["summary"]["total"]
    assert total["requests"] > 0 and total["failures"] == 0
    # Every request Locust reports was served by the target. At stop, Locust may kill a user
    # whose request was already on the wire: at most one unrecorded request per user.
    assert total["requests"] <= target.total() <= total["requests"] + 10
    assert record["workers_expected"] == 2 and record["exit_code"] == 0
    assert (record["verdict"], record["swarm_exit_code"]) == ("pass", 0)
    # Every field the run record promises (issue: swarm and Locust versions, provider,
    # region, instance types and counts, file hashes, host, load shape, times, exit, checks).
    for key in ("swarm_version", "locust_version", "provider", "region", "instances", "locustfile",
                "files", "host", "users", "spawn_rate", "run_time", "extra_args", "started_at",
                "ended_at", "verdict", "swarm_exit_code", "exit_code", "checks", "summary"):
        assert key in record, key
    assert record["locust_version"] == __import__("importlib.metadata").metadata.version("locust")
    assert record["provider"] == "local" and record["instances"]["workers"] == 2
    assert (record["users"], record["spawn_rate"], record["run_time"]) == (10, 10.0, "4s")
    assert record["started_at"] <= record["ended_at"]
    for f in ("signups.py", "viral_load.py", "typical_load.py", "common.py"):
        assert len(record["files"][f]) == 64
    assert "viral_load.py" in record["files"] and len(record["files"]["viral_load.py"]) == 64
    assert "Total" in res.out and str(total["requests"]) in res.out

    # A UI-mode run keeps going until killall.
    res = swarm("run", "-H", target.url, "-f", "viral_load.py", "-u", "2", cwd=workdir, env=cli_env)
    assert res.code == 0, res.err
    assert any("locust" in p for p in processes_under(state))
    res = swarm("killall", cwd=workdir, env=cli_env)
    assert res.code == 0, res.err
    assert processes_under(state) == []
    assert len(status(workdir, cli_env)) == 3     # machines kept

    res = swarm("down", cwd=workdir, env=cli_env)
    assert res.code == 0, res.err
    assert status(workdir, cli_env) == []
    assert processes_under(state) == []
    assert not (state / "local" / "t").exists()
    res = swarm("down", cwd=workdir, env=cli_env)
    assert res.code == 0 and "nothing to do" in res.err


def test_down_stops_a_running_locust(workdir, cli_env, local_toml, target, tmp_path):
    local_toml()
    swarm("up", "master", cwd=workdir, env=cli_env)
    swarm("up", "workers", "-n", "1", cwd=workdir, env=cli_env)
    assert swarm("run", "-H", target.url, "-f", "signups.py", "-u", "1", cwd=workdir, env=cli_env).code == 0
    assert processes_under(tmp_path / "state")
    assert swarm("down", cwd=workdir, env=cli_env).code == 0
    assert processes_under(tmp_path / "state") == []


def test_scaling_workers_up_and_down(workdir, cli_env, local_toml):
    local_toml()
    assert swarm("up", "master", cwd=workdir, env=cli_env).code == 0
    res = swarm("up", "master", cwd=workdir, env=cli_env)
    assert res.code == 0 and "already has a master" in res.err
    assert swarm("up", "workers", "-n", "3", cwd=workdir, env=cli_env).code == 0
    first = {n["id"] for n in status(workdir, cli_env) if n["role"] == "worker"}
    assert len(first) == 3
    res = swarm("up", "workers", "-n", "1", cwd=workdir, env=cli_env)
    assert res.code == 0, res.err
    workers = [n for n in status(workdir, cli_env) if n["role"] == "worker"]
    assert len(workers) == 1 and workers[0]["name"] == "worker-1"
    assert workers[0]["id"] in first     # the oldest stays, the newest go
    res = swarm("up", "workers", "-n", "1", cwd=workdir, env=cli_env)
    assert "nothing to do" in res.err
    assert swarm("down", "workers", cwd=workdir, env=cli_env).code == 0
    assert [n["role"] for n in status(workdir, cli_env)] == ["master"]
    assert swarm("down", cwd=workdir, env=cli_env).code == 0


@pytest.mark.parametrize("check, code", [("p95<10s", 0), ("rps>100000", 1)])
def test_checks_set_the_exit_code(workdir, cli_env, local_toml, target, check, code):
    local_toml()
    swarm("up", "master", cwd=workdir, env=cli_env)
    swarm("up", "workers", "-n", "1", cwd=workdir, env=cli_env)
    try:
        res = swarm("run", "-H", target.url, "-f", "viral_load.py", "--headless", "-u", "5",
                    "-t", "3s", "--check", check, "--check", "fail_ratio<1%", cwd=workdir,
                    env=cli_env, timeout=120)
        assert res.code == code, res.err
        if code:
            assert res.err_lines[-1] == "error: the run failed: 1 check(s) failed: rps>100000"
            assert re.search(r"check rps>100000: FAIL \(actual [0-9.]+ rps\)", res.err), res.err
        else:
            assert re.search(r"check p95<10s: pass \(actual [0-9.]+ ms\)", res.err), res.err
        assert "check fail_ratio<1%: pass (actual 0 %)" in res.err
        record = json.loads(next((workdir / "results" / "t").glob("*/run.json")).read_text())
        assert [c["ok"] for c in record["checks"]] == [code == 0, True]
        assert (record["verdict"], record["swarm_exit_code"], record["exit_code"]) == \
            ("fail" if code else "pass", code, 0)
        res = swarm("results", "--last", cwd=workdir, env=cli_env)
        assert f"verdict: {'fail' if code else 'pass'}" in res.err, res.err
    finally:
        swarm("down", cwd=workdir, env=cli_env)


def test_checks_table_applies_when_no_check_is_given(workdir, cli_env, local_toml, target):
    local_toml("[checks]\nmin_rps = 100000\n")
    swarm("up", "master", cwd=workdir, env=cli_env)
    swarm("up", "workers", "-n", "1", cwd=workdir, env=cli_env)
    try:
        res = swarm("run", "-H", target.url, "-f", "viral_load.py", "--headless", "-u", "2",
                    "-t", "2s", cwd=workdir, env=cli_env, timeout=120)
        assert res.code == 1 and "rps>=100000" in res.err_lines[-1]
    finally:
        swarm("down", cwd=workdir, env=cli_env)


BAD_RUNS = [
    (["-f", "missing.py"], "locustfile 'missing.py' not found"),
    (["-f", "viral_load.py", "-H", "staging.example.com"], "bad -H"),
    (["-f", "viral_load.py", "-H", "ftp://x"], "bad -H"),
    (["-f", "viral_load.py", "--profile", "nope"], "unknown profile 'nope'"),
    (["-f", "viral_load.py", "--check", "p95<fast"], "bad --check"),
    (["-f", "viral_load.py", "--headless"], "need a run time"),
    (["-f", "viral_load.py", "-t", "soon"], "-t"),
    (["-f", "empty.py"], "is empty"),
    (["-f", "broken.py"], "broken.py:2: syntax error"),
    (["-f", "nouser.py"], "defines no User class"),
]


@pytest.mark.parametrize("args, needle", BAD_RUNS)
def test_bad_run_input_starts_nothing(workdir, cli_env, local_toml, tmp_path, args, needle):
    local_toml()
    (workdir / "locustfiles" / "empty.py").write_text("")
    (workdir / "locustfiles" / "broken.py").write_text("import locust\ndef oops(:\n")
    (workdir / "locustfiles" / "nouser.py").write_text("x = 1\n")
    swarm("up", "master", cwd=workdir, env=cli_env)
    swarm("up", "workers", "-n", "1", cwd=workdir, env=cli_env)
    full = ["run", "-H", "http://127.0.0.1:9"] + args if "-H" not in args else ["run"] + args
    res = swarm(*full, cwd=workdir, env=cli_env)
    assert_one_error_line(res, 2, needle)
    assert processes_under(tmp_path / "state") == []
    # nothing was even shipped
    assert not list((tmp_path / "state").rglob("locustfiles"))
    swarm("down", cwd=workdir, env=cli_env)


@pytest.mark.parametrize("n, needle", [("0", "at least 1"), ("-1", "at least 1"),
                                       ("abc", "not a valid integer"), ("100000", "limit")])
def test_bad_worker_counts(workdir, cli_env, local_toml, n, needle):
    local_toml()
    swarm("up", "master", cwd=workdir, env=cli_env)
    res = swarm("up", "workers", "-n", n, cwd=workdir, env=cli_env)
    assert_one_error_line(res, 2, needle)
    assert [x["role"] for x in status(workdir, cli_env)] == ["master"]
    swarm("down", cwd=workdir, env=cli_env)


def test_commands_on_an_empty_stack(workdir, cli_env, local_toml):
    local_toml()
    assert_one_error_line(swarm("up", "workers", "-n", "2", cwd=workdir, env=cli_env), 2, "no master")
    assert_one_error_line(swarm("run", "-H", "http://127.0.0.1:9", "-f", "viral_load.py",
                                cwd=workdir, env=cli_env), 2, "no master")
    assert_one_error_line(swarm("ssh", "master", cwd=workdir, env=cli_env), 2, "local provider")
    assert status(workdir, cli_env) == []


def test_demo_runs_the_whole_cycle_and_leaves_nothing(workdir, cli_env, tmp_path):
    res = swarm("demo", "-t", "4s", cwd=workdir, env=cli_env, timeout=90)
    assert res.code == 0, res.err
    assert "Total" in res.out
    line = [l for l in res.err_lines if l.startswith("the target served")][0]
    m = re.search(r"served (\d+) requests; Locust counted (\d+) with 0 failures", line)
    served, counted = int(m[1]), int(m[2])
    assert 0 < counted <= served <= counted + 20     # 20 users: at most one in flight each
    assert processes_under(tmp_path / "state") == []
    assert not (tmp_path / "state" / "local" / "demo").exists()


def test_logs_follow_streams_until_ctrl_c(workdir, cli_env, local_toml, target):
    import signal
    import subprocess
    import time

    from tests.helpers import SWARM
    local_toml()
    swarm("up", "master", cwd=workdir, env=cli_env)
    swarm("up", "workers", "-n", "1", cwd=workdir, env=cli_env)
    try:
        assert swarm("run", "-H", target.url, "-f", "viral_load.py", "-u", "2", cwd=workdir, env=cli_env).code == 0
        follow = subprocess.Popen([*SWARM, "logs", "-f", "all"], cwd=workdir, env=cli_env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines = []
        deadline = time.monotonic() + 20
        def seen(prefix):
            return any(line.startswith(prefix) for line in lines)
        while time.monotonic() < deadline and not (seen("master | ") and seen("worker-1 | ")):
            lines.append(follow.stdout.readline())
        assert any(l.startswith("master | ") for l in lines), lines
        assert any(l.startswith("worker-1 | ") for l in lines), lines
        follow.send_signal(signal.SIGINT)
        assert follow.wait(timeout=15) == 0
    finally:
        swarm("down", cwd=workdir, env=cli_env)



def test_local_runner_runs_after_exit_only(tmp_path):
    """The local runner's run_after_exit: the command waits for this process to exit."""
    node = tmp_path / "node"
    controller = (f"from swarm.remote.local import LocalRunner; import sys\n"
                  f"r = LocalRunner({str(node)!r}, 'node'); r.run_after_exit('echo ran >deferred.txt')\n"
                  f"r.close(); print('closed', flush=True); sys.stdin.readline()\n")
    with controller_until_exit(controller) as exit_now:
        assert not (node / "deferred.txt").exists()
        exit_now()
        poll(lambda: (node / "deferred.txt").exists(), timeout=10, what="the deferred command")


FAILING = """
from locust import HttpUser, constant, task


class Broken(HttpUser):
    wait_time = constant(0.1)

    @task(3)
    def missing(self):
        self.client.get("/no/such/page", name="/no/such/page")

    @task(1)
    def raises(self):
        raise ValueError("the task broke on purpose")
"""


def test_a_failing_run_says_why_it_failed(workdir, cli_env, local_toml, target):
    """Every request fails (404) and a task raises: the user sees Locust's top failures and
    exceptions, every check's actual value with its unit, and one error line saying why the
    exit code is 1; run.json says verdict fail with swarm's and Locust's exit codes."""
    local_toml()
    (workdir / "locustfiles" / "broken.py").write_text(FAILING)
    swarm("up", "master", cwd=workdir, env=cli_env)
    swarm("up", "workers", "-n", "1", cwd=workdir, env=cli_env)
    try:
        res = swarm("run", "-H", target.url, "-f", "broken.py", "--headless", "-u", "3",
                    "-t", "3s", "--check", "fail_ratio<1%", "--check", "p95<10s",
                    cwd=workdir, env=cli_env, timeout=120)
        assert res.code == 1, res.err
        assert "Failures" in res.out and "/no/such/page" in res.out and "404" in res.out, res.out
        assert "Exceptions" in res.out and "the task broke on purpose" in res.out, res.out
        assert re.search(r"broken\.py:\d+ in raises", res.out), res.out
        assert "check fail_ratio<1%: FAIL (actual 100 %)" in res.err, res.err
        last = res.err_lines[-1]
        assert re.fullmatch(
            r"error: the run failed: 1 check\(s\) failed: fail_ratio<1%; Locust exited 1 "
            r"\(\d+ request\(s\) failed and tasks raised \d+ exception\(s\), listed above\)",
            last), last
        record = json.loads(next((workdir / "results" / "t").glob("*/run.json")).read_text())
        assert (record["verdict"], record["swarm_exit_code"], record["exit_code"]) == \
            ("fail", 1, 1)
        res = swarm("results", cwd=workdir, env=cli_env)
        assert "fail" in res.out and "verdict" in res.out, res.out
    finally:
        swarm("down", cwd=workdir, env=cli_env)


def test_cpu_is_named_by_node_for_every_worker_and_the_master(workdir, cli_env, local_toml,
                                                              target):
    """On local every worker has this machine's hostname, so Locust's worker ids map to no
    node: run.json names each worker node (all of them) and the master, never an id."""
    local_toml()
    swarm("up", "master", cwd=workdir, env=cli_env)
    swarm("up", "workers", "-n", "2", cwd=workdir, env=cli_env)
    try:
        res = swarm("run", "-H", target.url, "-f", "viral_load.py", "--headless", "-u", "4",
                    "-t", "7s", "--check", "cpu<101%", cwd=workdir, env=cli_env, timeout=120)
        assert res.code == 0, res.err
        record = json.loads(next((workdir / "results" / "t").glob("*/run.json")).read_text())
        assert sorted(record["workers_cpu_peak"]) == ["worker-1", "worker-2"], record
        assert isinstance(record["master_cpu_peak"], float), record
        assert record["summary"]["workers_cpu"].keys() == {"master", "worker-1", "worker-2"}
    finally:
        swarm("down", cwd=workdir, env=cli_env)


def test_a_run_shows_its_progress_and_killall_says_what_it_stopped(workdir, cli_env,
                                                                    local_toml, target):
    local_toml()
    swarm("up", "master", cwd=workdir, env=cli_env)
    swarm("up", "workers", "-n", "1", cwd=workdir, env=cli_env)
    try:
        res = swarm("run", "-H", target.url, "-f", "viral_load.py", "--headless", "-u", "3",
                    "-t", "15s", cwd=workdir, env=cli_env, timeout=120)
        assert res.code == 0, res.err
        lines = [ln for ln in res.err_lines if ln.startswith("• running ")]
        # off a terminal: one line at the start, then one every 10 s
        assert 2 <= len(lines) <= 3, res.err
        assert re.fullmatch(r"• running 0:\d\d of 0:15 \(0:\d\d left\): \d+ users, [\d.]+ rps, "
                            r"[\d.]+ % failures, 1 of 1 workers", lines[-1]), lines
        assert swarm("run", "-H", target.url, "-f", "viral_load.py", "-u", "1", cwd=workdir,
                     env=cli_env).code == 0
        res = swarm("killall", cwd=workdir, env=cli_env)
        assert res.err_lines[-1] == ("stopped Locust on master, worker-1 (2 node(s); the "
                                     "machines stay up)"), res.err
        res = swarm("killall", cwd=workdir, env=cli_env)
        assert res.err_lines[-1] == ("no Locust test was running (2 node(s); the machines "
                                     "stay up)"), res.err
    finally:
        swarm("down", cwd=workdir, env=cli_env)


def test_status_names_cpu_by_node_while_a_test_runs(workdir, cli_env, local_toml, target):
    local_toml()
    swarm("up", "master", cwd=workdir, env=cli_env)
    swarm("up", "workers", "-n", "2", cwd=workdir, env=cli_env)
    try:
        # UI mode with --autostart: the test runs until killall
        res = swarm("run", "-H", target.url, "-f", "viral_load.py", "-u", "4", "-r", "4",
                    "--", "--autostart", cwd=workdir, env=cli_env)
        assert res.code == 0, res.err
        poll(lambda: target.total() > 20, timeout=60, what="the load to arrive")
        got = json.loads(swarm("status", "--json", cwd=workdir, env=cli_env).out)
        assert sorted(got["cpu"]) == ["master", "worker-1", "worker-2"], got
        text = swarm("status", cwd=workdir, env=cli_env).out
        assert re.search(r"CPU +│ master \d+%, worker-1 \d+%, worker-2 \d+%", text), text
        for w in got["locust"]["workers"]:
            assert str(w["id"]) not in text, text  # Locust's ids map to no node here
    finally:
        swarm("killall", cwd=workdir, env=cli_env)
        swarm("down", cwd=workdir, env=cli_env)


def test_workers_that_come_up_while_a_run_starts_are_told_they_wait_for_the_next_run(
        workdir, cli_env, local_toml, target, tmp_path):
    local_toml(name="starting")
    assert swarm("up", "master", cwd=workdir, env=cli_env).code == 0
    try:
        assert swarm("up", "workers", "-n", "1", cwd=workdir, env=cli_env).code == 0
        res = swarm("run", "-H", target.url, "-f", "viral_load.py", "-u", "2", "-r", "2",
                    cwd=workdir, env=cli_env, timeout=120)   # UI mode: Locust stays up
        assert res.code == 0, res.err
        # As between `run` starting the master and its wait for the workers: the master's
        # Locust runs, and nothing says yet how to join its run.
        [meta] = list((tmp_path / "state").rglob("run-meta.json"))
        meta.unlink()
        res = swarm("up", "workers", "-n", "2", cwd=workdir, env=cli_env, timeout=120)
        assert res.code == 0, res.err
        assert "the master's Locust is starting a run" in res.err, res.err
        assert "they take part from the next `swarm run`" in res.err
        assert "joined the running test" not in res.err, res.err
    finally:
        swarm("killall", cwd=workdir, env=cli_env, timeout=60)
        assert swarm("down", cwd=workdir, env=cli_env, timeout=120).code == 0
