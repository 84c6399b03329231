"""Pure logic: Locust command lines, stats parsing, --check expressions."""
import subprocess
import threading
import time

import pytest

from swarm.locust import argv as locust_argv
from swarm.locust import shell, stats
from swarm.pipeline.judge import checks_from_table, parse_check
from swarm.config import parse
from swarm.errors import UsageError

CSV = """Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%
GET,/kandus/[id],100,1,3,4.5,1,40,120,20.0,0.2,3,4,4,5,6,9,12,20,40,40,40
POST,/plays,50,0,2,2.5,1,10,30,10.0,0.0,2,3,3,3,4,5,6,8,10,10,10
,Aggregated,150,1,3,3.8,1,40,90,30.0,0.2,3,3,4,4,5,8,10,18,40,40,40
"""


def spec(**kw):
    base = dict(locustfile="viral_load.py", host="http://t", users=30, spawn_rate=10,
                run_time="10s", headless=True, expect_workers=6, master_port=5557, web_port=8089)
    return locust_argv.RunSpec(**{**base, **kw})


def test_master_command_line_binds_ui_to_loopback_and_writes_results():
    argv = locust_argv.master_argv(spec(extra_args=("--stop-timeout", "5")))
    s = " ".join(argv)
    assert "--master --master-bind-port 5557" in s
    assert "--enable-rebalancing" in argv  # workers may join / leave mid-run
    assert "--web-host 127.0.0.1 --web-port 8089" in s
    assert "--autostart" in argv and "--expect-workers 6" in s and "-t 10s" in s
    assert "--csv results/locust" in s and "--html results/report.html" in s
    assert "--json-file results/stats" in s
    assert argv[-2:] == ["--stop-timeout", "5"]
    ui = locust_argv.master_argv(spec(headless=False, run_time=None))
    assert "--autostart" not in ui and "--csv" not in ui and "-t" not in ui


def test_worker_command_line_points_at_the_master():
    assert locust_argv.worker_argv("a.py", "10.0.0.5", 5557, -1) == [
        "-f", "swarm_final.py,locustfiles/a.py", "--worker", "--master-host", "10.0.0.5", "--master-port", "5557",
        "--processes", "-1"]
    assert "--processes" not in locust_argv.worker_argv("a.py", "h", 1, 1)


def test_shell_snippets_use_pid_files_not_names():
    for cmd in (shell.kill_cmd("swarm"), shell.running_cmd("swarm"), shell.start_cmd("swarm", ["-f", "x"])):
        assert "pkill" not in cmd and "killall" not in cmd
        assert "locust.pid" in cmd


def test_parse_stats_csv():
    s = stats.parse_stats_csv(CSV)
    assert [e.name for e in s.endpoints] == ["/kandus/[id]", "/plays"]
    assert (s.total.requests, s.total.failures, s.total.rps, s.total.p95_ms) == (150, 1, 30.0, 8.0)
    assert s.total.fail_ratio == pytest.approx(1 / 150)
    with pytest.raises(ValueError):
        stats.parse_stats_csv("a,b\n1,2\n")


@pytest.mark.parametrize("text, passes", [
    ("p95<10ms", True), ("p95<8ms", False), ("p99<=0.02s", True), ("avg<3ms", False),
    ("fail_ratio<1%", True), ("fail_ratio<0.5%", False), ("fail_ratio<=0.01", True),
    ("rps>25", True), ("rps>=31", False), ("cpu<90%", True),
])
def test_checks_against_a_summary(text, passes):
    s = stats.parse_stats_csv(CSV)
    assert parse_check(text).evaluate(s).ok is passes


@pytest.mark.parametrize("bad", ["p95<200", "p95 200ms", "latency<5ms", "rps>5ms", "fail_ratio<200%", ""])
def test_bad_checks_are_usage_errors(bad):
    with pytest.raises(UsageError):
        parse_check(bad)


def test_checks_table_becomes_checks():
    c = parse("[checks]\np95_ms = 200\nfail_ratio = 0.01\nmin_rps = 5\n")
    assert [x.text for x in checks_from_table(c.checks)] == ["p95<200ms", "fail_ratio<=0.01", "rps>=5"]


@pytest.mark.parametrize("text, secs", [("30s", 30), ("5m", 300), ("1h30m", 5400), ("90", 90)])
def test_durations(text, secs):
    assert locust_argv.parse_duration(text) == secs


@pytest.mark.parametrize("bad", ["soon", "0s", "-5s", "1d"])
def test_bad_durations(bad):
    with pytest.raises(ValueError):
        locust_argv.parse_duration(bad)


def _sh(cmd: str, timeout: float = 30) -> tuple[float, subprocess.CompletedProcess]:
    t = time.monotonic()
    res = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, timeout=timeout)
    return time.monotonic() - t, res


def test_waits_on_the_master_end_with_its_process_group(tmp_path):
    """wait_exit_cmd / wait_workers_cmd run on the master: real processes, real dash."""
    proc = subprocess.Popen(["sleep", "1"], start_new_session=True)   # pid = pgid, as Locust's
    threading.Thread(target=proc.wait, daemon=True).start()   # reaped at once, as init does
    try:
        (tmp_path / "locust.pid").write_text(f"{proc.pid}\n")
        took, res = _sh(shell.wait_exit_cmd(str(tmp_path), 10))
        # it waited for the 1 s process and returned when it ended, well before the 10 s bound
        assert res.returncode == 0 and 0.7 < took < 5, (took, res.stderr)
    finally:
        proc.kill()
        proc.wait()
    # Locust gone: no waiting for workers that will never come
    took, res = _sh(shell.wait_workers_cmd(str(tmp_path), 1, 3, 10))
    # under half the 10 s it was given: it saw Locust gone rather than waiting it out
    assert res.returncode == 0 and took < 5, (took, res.stderr)
    # Locust alive but its API not answering: bounded by the timeout given
    proc = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        (tmp_path / "locust.pid").write_text(f"{proc.pid}\n")
        took, res = _sh(shell.wait_workers_cmd(str(tmp_path), 1, 3, 0.5))
        # it waited its 0.5 s, then gave up: not the 30 s the process lives
        assert res.returncode == 0 and 0.4 < took < 5, (took, res.stderr)
    finally:
        proc.kill()
        proc.wait()


def test_warm_start_snippets_parse_and_use_pid_files():
    cmd = shell.start_cmd("swarm", ["-f", "x"], warm=True)
    assert "warm.fifo" in cmd and "locust.pid" in cmd and "pkill" not in cmd
    assert subprocess.run(["sh", "-n", "-c", cmd]).returncode == 0
    assert subprocess.run(["sh", "-n", "-c", shell.warm_restart_cmd("swarm")]).returncode == 0
    assert subprocess.run(["sh", "-n", "-c", shell.warm_stop_cmd("swarm")]).returncode == 0


def test_the_roster_of_a_running_test_is_what_it_expects_now():
    from swarm.locust import roster
    from swarm.locust.live import MasterStats, RunMeta, summarize

    text = (
        '{"event": "joined", "worker": "worker-3", "at": "2026-01-01T00:00:15+00:00", '
        '"processes": 2, "hostname": "ip-3"}\n'
        '{"event": "left", "worker": "worker-1", "at": "2026-01-01T00:00:35+00:00", "proc\n'
        '{"event": "left", "worker": "worker-3", "at": "2026-01-01T00:00:35+00:00", '
        '"processes": 2}\n'
    )
    entries = roster.parse(text)  # the line cut short while being written is skipped
    assert [(str(e.event), e.worker) for e in entries] == [("joined", "worker-3"), ("left", "worker-3")]
    meta = RunMeta(2, {"worker-1": 1, "worker-2": 1}, {"worker-1": "ip-1", "worker-2": "ip-2"},
                   started_at="2026-01-01T00:00:00+00:00")
    now = meta.with_roster(entries[:1])
    assert now.processes == {"worker-1": 1, "worker-2": 1, "worker-3": 2} and now.expected == 4
    api = {"state": "running", "worker_count": 4, "workers": [
        {"id": f"ip-{i}_{u}", "state": "running", "user_count": 2} for i, u in
        ((1, "a"), (2, "b"), (3, "c"), (3, "d"))]}
    view = summarize(MasterStats(api, True, meta, None, entries[:1]))
    assert view.missing == [] and view.workers_expected == 4
    assert sorted(w.node for w in view.workers) == ["worker-1", "worker-2", "worker-3", "worker-3"]
    gone = summarize(MasterStats({**api, "worker_count": 2, "workers": api["workers"][:2]},
                                 True, meta, None, entries))
    assert gone.missing == [] and gone.workers_expected == 2  # a leaver is not missing
    took = roster.participants(meta.started_at, meta.processes, entries)
    assert [(p.name, p.processes, p.joined_at[-14:-6], p.left_at) for p in took] == [
        ("worker-1", 1, "00:00:00", None), ("worker-2", 1, "00:00:00", None),
        ("worker-3", 2, "00:00:15", "2026-01-01T00:00:35+00:00")]
    assert "roster.jsonl" in roster.append_cmd(entries) and ">>" in roster.append_cmd(entries)
