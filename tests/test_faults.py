"""Injected faults: the CLI in a subprocess against moto (with faults injected in front of it,
see EmulatedEC2.inject) and emulated hosts that lose their sshd, power off mid-run, or a
controller whose disk fills while results are saved.

Each test names the fault in its docstring and says what swarm must do about it.
"""
from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.helpers import assert_error_line, assert_one_error_line, swarm
from tests.reliability import (finish, start, all_instances, ec2_stack, ec2_toml, fast_bootstrap, instances,
                               locust_pids, poll)

STACK = "rel"


@pytest.fixture
def stack_env(workdir, cli_env, ec2_env):
    return ec2_stack(workdir, cli_env, ec2_env, STACK)


def up(workdir, env, workers: int) -> None:
    res = swarm("up", "master", cwd=workdir, env=env, timeout=120)
    assert res.code == 0, res.err
    if workers:
        res = swarm("up", "workers", "-n", str(workers), cwd=workdir, env=env, timeout=120)
        assert res.code == 0, res.err


def host_of(emulated_ec2, workdir, env, name: str):
    """The emulated host of the node swarm calls `name` (master, worker-2, ...)."""
    res = swarm("status", "--json", cwd=workdir, env=env)
    ids = {n["name"]: n["id"] for n in json.loads(res.out)["nodes"]}
    return emulated_ec2.host_for(ids[name])


def latest_run(workdir: Path) -> Path:
    return sorted((workdir / "results" / STACK).iterdir())[-1]


# ---- 1. Ctrl-C after the launch call returned ----

@pytest.mark.parametrize("moment", ["launched", "bootstrapping"])
def test_sigint_during_up_workers_leaves_nothing_unfindable(moment, workdir, stack_env,
                                                            emulated_ec2, tmp_path):
    """Fault: Ctrl-C during `up workers -n 5`, once moto holds the 5 instances ("launched"),
    or once their bootstrap runs ("bootstrapping", which would take a minute). swarm exits 130
    at once, and `status` + `down` find and remove all 5: tags are the only state."""
    up(workdir, stack_env, 0)
    fast_bootstrap(workdir, worker_sleep=60)       # workers' bootstrap outlives the test
    proc, _, err = start(["up", "workers", "-n", "5"], workdir, stack_env, tmp_path)
    ec2 = emulated_ec2.client()
    try:
        poll(lambda: len(instances(ec2, STACK, "worker")) == 5, timeout=60, interval=0.05,
             what="moto to hold 5 workers")
        if moment == "bootstrapping":
            poll(lambda: any(h.processes("sleep 60") for h in emulated_ec2.hosts.values()),
                 timeout=60, interval=0.05, what="a worker's bootstrap to run")
        proc.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        code = finish(proc, timeout=20)
        waited = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    text = err.read_text()
    assert code == 130, text
    # what a user waits after Ctrl-C: the launch is cancelled, not waited out (its bootstrap
    # sleeps 60 s, a launch's waits are minutes); 10 s leaves room for a busy machine
    assert waited < 10, f"Ctrl-C took {waited:.1f}s"
    assert "Traceback" not in text and text.strip().splitlines()[-1] == "interrupted", text

    res = swarm("status", "--json", cwd=workdir, env=stack_env)
    assert res.code == 0, res.err
    nodes = json.loads(res.out)["nodes"]
    assert sorted(n["name"] for n in nodes) == ["master"] + [f"worker-{i}" for i in range(1, 6)]
    res = swarm("down", cwd=workdir, env=stack_env, timeout=120)
    assert res.code == 0, res.err
    assert "removed 6 node(s)" in res.err
    assert instances(ec2, STACK) == [] and emulated_ec2.hosts == {}


# ---- 2-4. AWS misbehaving ----

def test_throttled_launch_is_retried_and_succeeds(workdir, stack_env, emulated_ec2):
    """Fault: RequestLimitExceeded (HTTP 503) on the first 3 RunInstances calls. botocore's
    retries absorb it; exactly one master is launched (same ClientToken, no duplicates)."""
    inj = emulated_ec2.inject("RunInstances", "RequestLimitExceeded", status=503, times=3,
                              message="Request limit exceeded.")
    res = swarm("up", "master", cwd=workdir, env=stack_env, timeout=120)
    assert res.code == 0, res.err
    assert inj.hits == 3
    # + the first call of all, which AWS's eventual consistency answered (quirks.py)
    assert emulated_ec2.call_count("RunInstances") == 4 + emulated_ec2.quirks.count("RunInstances")
    tokens = {p["ClientToken"] for p in inj.params_seen}
    assert len(tokens) == 1, tokens        # every retry is the same idempotent request
    assert len(all_instances(emulated_ec2.client())) == 1


def test_spot_without_capacity_falls_back_to_on_demand(workdir, cli_env, ec2_env, emulated_ec2):
    """Fault: every spot RunInstances answers InsufficientInstanceCapacity (a server error,
    HTTP 500, as EC2 sends it). swarm launches on-demand instead, says so, and does not spend a
    minute retrying a capacity error first."""
    ec2_toml(workdir, ec2_env.subnet_id, name=STACK, ec2_extra="spot = true\n")
    fast_bootstrap(workdir)
    spot = lambda p: p.get("InstanceMarketOptions.MarketType") == "spot"   # noqa: E731
    inj = emulated_ec2.inject("RunInstances", "InsufficientInstanceCapacity", status=500,
                              times=None, when=spot,
                              message="There is no Spot capacity available that matches your request.")
    t0 = time.monotonic()
    res = swarm("up", "master", cwd=workdir, env={**cli_env, **ec2_env.env}, timeout=180)
    took = time.monotonic() - t0
    assert res.code == 0, res.err
    assert inj.hits == 1, f"a capacity error was retried {inj.hits - 1} times"
    assert "no spot capacity" in res.err and "on-demand" in res.err, res.err
    (inst,) = all_instances(emulated_ec2.client())
    assert inst.get("InstanceLifecycle") != "spot"
    # `up master` takes ~5 s on an idle machine; botocore's retries of a 500 (7 more, adaptive
    # backoff) would add ~35 s: 30 s tells them apart with room for a busy machine (inj.hits
    # above is the exact check)
    assert took < 30, took


@pytest.mark.parametrize("shape", ["aws-internal-error", "html-500"])
def test_aws_answering_500_is_one_clear_line(shape, workdir, stack_env, emulated_ec2):
    """Fault: the EC2 endpoint answers 500 to everything: AWS's own InternalError, or an HTML
    error page (a proxy, or moto itself crashing). After the retries (bounded here with
    AWS_MAX_ATTEMPTS, which swarm honours), one line says what failed; nothing is launched."""
    body = (b"<!doctype html>\n<html><title>500 Internal Server Error</title>"
            b"<h1>Internal Server Error</h1></html>\n") if shape == "html-500" else None
    inj = emulated_ec2.inject("*", "InternalError", status=500, times=None, body=body,
                              message="An internal error has occurred")
    res = swarm("up", "master", cwd=workdir, env={**stack_env, "AWS_MAX_ATTEMPTS": "2"},
                timeout=120)
    needle = "InternalError" if body is None else "not an AWS response"
    assert_one_error_line(res, 1, needle, f"stack {STACK}")
    # botocore retries an AWS-shaped 500 (once more here); a page it cannot parse, never
    assert inj.hits == (2 if body is None else 1)
    emulated_ec2.clear_injections()
    assert all_instances(emulated_ec2.client()) == []


# ---- 5-6. a worker lost before or during a run ----

def test_worker_whose_sshd_died_is_named_and_skipped(workdir, stack_env, emulated_ec2,
                                                     bridge_target):
    """Fault: worker-2's sshd dies between `up` and `run`. `run` names it and goes on with the
    others; with --require-all it refuses and starts nothing."""
    up(workdir, stack_env, 2)
    dead = host_of(emulated_ec2, workdir, stack_env, "worker-2")
    dead.kill_sshd()
    run = ("run", "-H", bridge_target.url, "-f", "signups.py", "--headless", "-u", "4", "-r", "4",
           "-t", "3s")
    res = swarm(*run, "--require-all", cwd=workdir, env=stack_env, timeout=120)
    assert_error_line(res, 1, "workers unreachable, nothing started", "worker-2")
    assert all(locust_pids(h) == [] for h in emulated_ec2.hosts.values())

    res = swarm(*run, cwd=workdir, env=stack_env, timeout=120)
    assert res.code == 0, res.err
    assert "skipping unreachable worker(s): worker-2" in res.err, res.err
    assert "1 of 1 worker process(es) connected" in res.err, res.err
    record = json.loads((latest_run(workdir) / "run.json").read_text())
    assert record["skipped_workers"] == ["worker-2"]
    assert record["summary"]["total"]["requests"] > 0
    assert bridge_target.total() > 0


def power_off_mid_run(proc, ready, what: str, victim, target) -> tuple[int, float]:
    """Once ready() holds and load reaches the target, cut victim's power (silent first: no
    FIN or RST reaches anyone, see Host.power_cut) -> (the run's exit code, seconds from the
    cut to the CLI's exit). The run is killed if it has not ended by then."""
    try:
        poll(ready, timeout=60, what=what)
        poll(lambda: target.total() > 20, timeout=60, what="load on the target")
        cut = victim.power_cut()
        code = finish(proc, timeout=150)
        return code, time.monotonic() - cut
    finally:
        if proc.poll() is None:
            proc.kill()


def test_worker_powered_off_mid_run(workdir, stack_env, emulated_ec2, bridge_target, tmp_path):
    """Fault: worker-2's machine loses power a few seconds into a headless run (silence: its
    connections hang). The run completes on the others in about its run time (the silent
    node never holds up the follow loop), the results are saved, the summary names the lost
    worker, and nothing waits on it at the end."""
    up(workdir, stack_env, 2)
    victim = host_of(emulated_ec2, workdir, stack_env, "worker-2")
    proc, out, err = start(["run", "-H", bridge_target.url, "-f", "signups.py", "--headless",
                            "-u", "6", "-r", "6", "-t", "8s"], workdir, stack_env, tmp_path)
    code, after_cut = power_off_mid_run(proc, lambda: locust_pids(victim), "Locust on worker-2",
                                        victim, bridge_target)
    text = err.read_text()
    assert "Traceback" not in text, text
    assert code == 0, text
    # the cut came before the 8 s ended; then Locust's stop and the fetch (a busy machine: 30 s
    # of slack), but no SSH timeout of the silent node (10-15 s each) on the way
    print(f"lost worker: the run ended {after_cut:.1f}s after the power cut")
    assert after_cut < 8 + 30, text
    assert "missing workers: worker-2 dropped out during the run" in text, text
    record = json.loads((latest_run(workdir) / "run.json").read_text())
    assert record["summary"]["total"]["requests"] > 0
    assert "worker-2" in record.get("missing_workers", []), record.get("missing_workers")
    assert (latest_run(workdir) / "logs" / "worker-1.log").stat().st_size > 0


# ---- 7. the master lost mid-run ----

def test_master_powered_off_mid_run(workdir, stack_env, emulated_ec2, bridge_target, tmp_path):
    """Fault: the master's machine loses power mid-run (silence: swarm's SSH connection to it
    hangs, no FIN or RST). In bounded time: one clear error naming the master, the workers
    stopped (no more load on the target), their logs fetched into the run's results dir, and
    the master not waited on again."""
    up(workdir, stack_env, 1)
    master = host_of(emulated_ec2, workdir, stack_env, "master")
    worker = host_of(emulated_ec2, workdir, stack_env, "worker-1")
    proc, out, err = start(["run", "-H", bridge_target.url, "-f", "signups.py", "--headless",
                            "-u", "4", "-r", "4", "-t", "60s"], workdir, stack_env, tmp_path)
    code, after_cut = power_off_mid_run(proc, lambda: "worker process(es) connected" in err.read_text(),
                                        "the workers to connect", master, bridge_target)
    text = err.read_text()
    assert "Traceback" not in text, text
    assert code == 1, text
    # noticed within one poll's SSH timeout (20 s), then stop + fetch: well before the 60 s
    # run would have ended, with slack for a busy machine
    print(f"lost master: the CLI exited {after_cut:.1f}s after the power cut")
    assert after_cut < 45, text
    assert locust_pids(worker) == [], "the worker was left loading the target"
    seen = bridge_target.total()
    time.sleep(2)
    assert bridge_target.total() == seen, "requests reached the target after swarm gave up"
    assert "not fetched from master: it stopped answering during the run" in text, text
    line = [ln for ln in text.splitlines() if ln.strip()][-1]
    assert line.startswith("error: lost the master during the run: master"), text
    run_dir = latest_run(workdir)
    assert f"partial results are in results/{STACK}/{run_dir.name}" in line, line
    assert (run_dir / "logs" / "worker-1.log").stat().st_size > 0
    record = json.loads((run_dir / "run.json").read_text())
    # The figures were on the master and went with it: the record says the run went wrong and
    # carries no statistics rather than numbers swarm could not have seen.
    assert record["verdict"] == "error" and record["swarm_exit_code"] == 1, record
    assert record["summary"] is None, record["summary"]
    assert record["exit_code"] == 1 and record["workers_seen"] == 1, record


# ---- 8. the controller's disk fills while results are saved ----

@pytest.fixture
def tiny_results_disk(workdir):
    """workdir/results on a 64 KiB tmpfs (mounted by path in this test's mount namespace:
    run_in_lab's `ip netns exec` gives the suite its own), unmounted afterwards."""
    target = workdir / "results"
    target.mkdir()
    mnt = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,nr_inodes=64,mode=0755",
                          f"swarmtest-{uuid.uuid4().hex[:6]}", str(target)],
                         capture_output=True, text=True, timeout=20)
    if mnt.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mnt.stderr.strip()}")
    try:
        yield target
    finally:
        for _ in range(3):      # the test may have stacked a bigger one on top
            if subprocess.run(["mountpoint", "-q", str(target)], timeout=20).returncode != 0:
                break
            subprocess.run(["umount", str(target)], capture_output=True, timeout=20, check=True)


def test_full_disk_while_saving_results(workdir, stack_env, emulated_ec2, bridge_target,
                                        tiny_results_disk):
    """Fault: the controller's disk is full when the results come back. One clear error that
    says so; the results stay on the master, and `swarm results --fetch` brings them back
    once there is room."""
    up(workdir, stack_env, 1)
    master = host_of(emulated_ec2, workdir, stack_env, "master")
    (tiny_results_disk / "filler").write_bytes(b"\0" * 60 * 1024)
    res = swarm("run", "-H", bridge_target.url, "-f", "signups.py", "--headless", "-u", "4",
                "-r", "4", "-t", "3s", cwd=workdir, env=stack_env, timeout=120)
    assert_error_line(res, 1, "No space left on device", "results --fetch")
    remote = master.home / "swarm" / "results"
    assert (remote / "locust_stats.csv").stat().st_size > 0          # kept on the master
    (tiny_results_disk / "filler").unlink()
    for leftover in sorted((tiny_results_disk / STACK).iterdir()):   # the partial run dir
        subprocess.run(["rm", "-rf", str(leftover)], check=True, timeout=20)
    subprocess.run(["umount", str(tiny_results_disk)], check=True, timeout=20)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "swarmtest-big",
                    str(tiny_results_disk)], check=True, timeout=20)
    res = swarm("results", "--fetch", cwd=workdir, env=stack_env, timeout=120)
    assert res.code == 0, res.err
    fetched = sorted((tiny_results_disk / STACK).iterdir())[-1]
    assert (fetched / "locust_stats.csv").stat().st_size > 0
