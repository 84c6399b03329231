"""A worker leaving a running test keeps its Locust log (issue 18, scale out mid-run): read on
the worker after its stop, capped at its end, written to the master under the run's results,
brought back by the end-of-run fetch beside the other workers' logs. The commands run in a
real shell (the local Runner); the end-to-end case is in tests/test_scale_midrun.py."""
from __future__ import annotations

from swarm.pipeline import leaving
from swarm.pipeline.fetch import master_bundle_cmd, unpack_master_bundle
from swarm.remote.local import LocalRunner


def read_log(tmp_path, text: bytes | None):
    rd = tmp_path / "worker" / "swarm"
    rd.mkdir(parents=True)
    if text is not None:
        (rd / "locust.log").write_bytes(text)
    r = LocalRunner(tmp_path / "worker", "worker-1")
    return leaving.parse_log(r.run_bytes(leaving.log_cmd(str(rd)), timeout=30))


def test_a_small_log_is_kept_whole(tmp_path):
    log = read_log(tmp_path, b"Starting Locust\nShutting down (exit code 0)\n")
    assert log is not None and not log.cut
    assert log.kept() == b"Starting Locust\nShutting down (exit code 0)\n"


def test_a_huge_log_keeps_its_end_and_says_so(tmp_path):
    body = b"Starting Locust\n" + b"x" * (leaving.LOG_CAP + 5000) + b"\nShutting down\n"
    log = read_log(tmp_path, body)
    assert log is not None and log.cut and log.size == len(body)
    kept = log.kept()
    first, _, rest = kept.partition(b"\n")
    assert first == (f"[swarm: this worker left the run; its log was {len(body)} bytes, only "
                     f"its last {leaving.LOG_CAP} are kept]").encode()
    assert rest == body[-leaving.LOG_CAP:] and rest.endswith(b"Shutting down\n")


def test_no_log_is_none(tmp_path):
    assert read_log(tmp_path, None) is None


def test_kept_logs_come_back_with_the_runs_results(tmp_path):
    rd = tmp_path / "master" / "swarm"
    (rd / "results").mkdir(parents=True)
    (rd / "results" / "locust_stats.csv").write_text("Type,Name\n")
    (rd / "locust.log").write_text("master\n")
    mr = LocalRunner(tmp_path / "master", "master")
    logs = {"worker-1": b"worker-1 log\n", "worker-3": b"worker-3 log\n"}
    assert leaving.keep_logs(mr, str(rd), logs) is None

    out = tmp_path / "out"
    (out / "logs").mkdir(parents=True)
    bundle = mr.run_bytes(master_bundle_cmd(str(rd)), timeout=30)
    # worker-3 came back (a new worker-3 is in the run at its end): its log is its own
    unpack_master_bundle(bundle, out, out / "logs" / "master.log", taken={"worker-3"})
    assert (out / "logs" / "worker-1.log").read_bytes() == b"worker-1 log\n"
    assert (out / "logs" / "worker-3.left.log").read_bytes() == b"worker-3 log\n"
    assert not (out / "logs" / "worker-3.log").exists()
    assert (out / "logs" / "master.log").read_text() == "master\n"
    assert (out / "locust_stats.csv").is_file()
    assert not (out / "left-workers").exists()


def test_a_log_the_master_cannot_take_is_named_and_down_goes_on(tmp_path):
    (tmp_path / "master").mkdir()
    (tmp_path / "master" / "swarm").write_text("a file where the remote dir should be\n")
    mr = LocalRunner(tmp_path / "master", "master")
    line = leaving.keep_logs(mr, str(tmp_path / "master" / "swarm"), {"worker-1": b"log\n"})
    assert line is not None
    assert line.startswith("the Locust log of worker-1 was not kept (writing it on the master: ")


def test_a_name_that_leaves_twice_keeps_both_logs_in_order(tmp_path):
    # worker-2 left, a new worker-2 joined the same run, and left too: the first log stays
    rd = tmp_path / "master" / "swarm"
    (rd / "results").mkdir(parents=True)
    mr = LocalRunner(tmp_path / "master", "master")
    assert leaving.keep_logs(mr, str(rd), {"worker-2": b"first worker-2\n"}) is None
    assert leaving.keep_logs(mr, str(rd), {"worker-2": b"second worker-2\n",
                                           "worker-4": b"worker-4\n"}) is None

    out = tmp_path / "out"
    (out / "logs").mkdir(parents=True)
    bundle = mr.run_bytes(master_bundle_cmd(str(rd)), timeout=30)
    unpack_master_bundle(bundle, out, out / "logs" / "master.log")
    assert (out / "logs" / "worker-2.log").read_bytes() == b"first worker-2\nsecond worker-2\n"
    assert (out / "logs" / "worker-4.log").read_bytes() == b"worker-4\n"
    assert sorted(p.name for p in (rd / "results" / "left-workers").iterdir()) == [
        "worker-2.log", "worker-4.log"]   # no temporary dir left behind
