"""Scaling a running test (issue 18, "scale out mid-run"): the CLI in subprocesses against
emulated EC2 (moto, a real sshd and real Locust per instance), the built-in target on the lab
bridge counting what each host sent.

A headless run of 60 s on 2 workers; at ~15 s `swarm up workers -n 3` brings a third worker
into it (its requests reach the target, the master hands it a share of the users); at ~35 s
`swarm up workers -n 2` takes it out again without ending the test; the run ends on time with
exit 0, run.json lists the 3 workers with when they joined and left, and the requests swarm
reports are the target's count less at most what was in flight."""
from __future__ import annotations

import json
import time

from tests.helpers import swarm
from tests.reliability import ec2_stack, finish, poll, start

STACK = "scale"
USERS = 6
RUN_S = 60


def status(workdir, env) -> dict:
    res = swarm("status", "--json", cwd=workdir, env=env, timeout=60)
    assert res.code == 0, res.err
    return json.loads(res.out)


def users_by_worker(workdir, env) -> dict[str, int]:
    """The master's own figures (Locust's /stats/requests `workers[].user_count`, read on the
    master by `swarm status`), per worker node."""
    live = status(workdir, env)["locust"] or {}
    out: dict[str, int] = {}
    for w in live.get("workers", []):
        if w.get("node"):
            out[w["node"]] = out.get(w["node"], 0) + int(w.get("users") or 0)
    return out


def sleep_until(t: float) -> None:
    time.sleep(max(0.0, min(60.0, t - time.monotonic())))


def test_a_worker_joins_and_leaves_a_running_test(workdir, cli_env, ec2_env, emulated_ec2,
                                                  bridge_target, tmp_path):
    env = ec2_stack(workdir, cli_env, ec2_env, STACK)
    assert swarm("up", "master", cwd=workdir, env=env, timeout=180).code == 0
    res = swarm("up", "workers", "-n", "2", cwd=workdir, env=env, timeout=180)
    assert res.code == 0, res.err
    proc, _, err = start(["run", "-H", bridge_target.url, "-f", "viral_load.py", "--headless",
                          "-u", str(USERS), "-r", str(USERS), "-t", f"{RUN_S}s"],
                         workdir, env, tmp_path)
    try:
        poll(lambda: users_by_worker(workdir, env) == {"worker-1": 3, "worker-2": 3},
             timeout=90, interval=0.5, what="the run to have its users on 2 workers")
        began = time.monotonic()

        # ~15 s in: a third worker joins the running test
        sleep_until(began + 15)
        res = swarm("up", "workers", "-n", "3", cwd=workdir, env=env, timeout=120)
        assert res.code == 0, res.err
        assert "joined the running test: worker-3 (1 process)" in res.err, res.err
        ips = {n["name"]: n["private_ip"] for n in status(workdir, env)["nodes"]}
        third = ips["worker-3"]
        poll(lambda: bridge_target.clients().get(third, 0) > 20, timeout=30,
             what="worker-3's requests at the target")
        poll(lambda: users_by_worker(workdir, env) ==
             {"worker-1": 2, "worker-2": 2, "worker-3": 2}, timeout=30, interval=0.5,
             what="the users redistributed over 3 workers")
        shown = swarm("status", cwd=workdir, env=env, timeout=60)
        assert "worker-3 joined at" in shown.out, shown.out
        assert proc.poll() is None, "the run ended early"

        # ~35 s in: it leaves again, the test goes on
        sleep_until(began + 35)
        res = swarm("up", "workers", "-n", "2", cwd=workdir, env=env, timeout=120)
        assert res.code == 0, res.err
        assert "left the running test: worker-3" in res.err, res.err
        assert "removed worker-3" in res.err, res.err
        poll(lambda: users_by_worker(workdir, env) == {"worker-1": 3, "worker-2": 3},
             timeout=30, interval=0.5, what="the users back on 2 workers")
        assert proc.poll() is None, "the run ended when a worker left"
        for name in ("worker-1", "worker-2"):
            assert bridge_target.clients().get(ips[name], 0) > 0, name

        code = finish(proc, timeout=RUN_S + 120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        swarm("down", cwd=workdir, env=env, timeout=180)
    text = err.read_text()
    assert code == 0, text
    assert "missing workers" not in text and "stayed connected" not in text, text
    took = time.monotonic() - began
    assert took < RUN_S + 30, f"the run took {took:.0f}s after its users were up"

    out = sorted((workdir / "results" / STACK).iterdir())[-1]
    record = json.loads((out / "run.json").read_text())
    assert record["missing_workers"] == [] and record["exit_code"] == 0
    workers = {w["name"]: w for w in record["workers"]}
    assert sorted(workers) == ["worker-1", "worker-2", "worker-3"], record["workers"]
    for name in ("worker-1", "worker-2"):
        assert workers[name]["joined_at"] == record["started_at"]
        assert workers[name]["left_at"] is None
    w3 = workers["worker-3"]
    assert w3["processes"] == 1
    assert record["started_at"] < w3["joined_at"] < w3["left_at"] < record["ended_at"], w3
    assert record["instances"]["workers"] == 3
    assert (out / "logs" / "worker-1.log").is_file()

    # every request the target served is in swarm's figures, but those in flight when users
    # stopped (at the end, and worker-3's when it left)
    served = sum(bridge_target.clients().values())
    reported = record["summary"]["total"]["requests"]
    assert served - 2 * USERS <= reported <= served, (reported, served)
