"""Scaling a running test (issue 18, "scale out mid-run"): the CLI in subprocesses against
emulated EC2 (moto, a real sshd and real Locust per instance), the built-in target on the lab
bridge counting what each host sent.

A headless run of 60 s on 2 workers; at ~15 s `swarm up workers -n 3` brings a third worker
into it (its requests reach the target, the master hands it a share of the users); at ~35 s
`swarm up workers -n 2` takes it out again without ending the test; the run ends on time with
exit 0, run.json lists the 3 workers with when they joined and left, and the requests swarm
reports are the target's count less at most what was in flight.

And `swarm down workers` ~10 s into a run of 40 s on 2 workers: both leave the test, their
machines go, the run goes on (Locust's master stopped the load, it waits for its run time),
ends on time with exit 0 and the figures the target saw; the leavers' Locust logs, kept on
the master by `down`, are in the results."""
from __future__ import annotations

import json
import time
from contextlib import contextmanager

from swarm.locust.shell import stats_url_cmd
from tests.helpers import swarm
from tests.reliability import ec2_stack, finish, poll, start

STACK = "scale"
USERS = 6
RUN_S = 60
WEB_PORT = 8089  # the master's web API (swarm's default port), on its loopback


def status(workdir, env) -> dict:
    res = swarm("status", "--json", cwd=workdir, env=env, timeout=60)
    assert res.code == 0, res.err
    return json.loads(res.out)


class Users:
    """The master's own per-worker user counts (Locust's /stats/requests `workers[].user_count`,
    read inside the master's namespace: cheaper than a `swarm status` on a busy machine), by
    worker node: Locust names a worker '<hostname>_<uuid>', EC2's hostname is ip-<private ip>."""

    def __init__(self, master_host):
        self.master = master_host
        self.nodes: dict[str, str] = {}  # hostname -> node name
        self.ips: dict[str, str] = {}  # node name -> private IP
        self.last: dict[str, int] | None = None

    def name(self, nodes: list[dict]) -> None:
        self.nodes = {"ip-" + n["private_ip"].replace(".", "-"): n["name"] for n in nodes}
        self.ips = {n["name"]: n["private_ip"] for n in nodes}

    def by_worker(self) -> dict[str, int]:
        got = self.master.exec(stats_url_cmd(WEB_PORT), timeout=20)
        try:
            api = json.loads(got.stdout)
        except ValueError:
            return {}
        out: dict[str, int] = {}
        for w in api.get("workers", []):
            if w.get("state") == "missing":
                continue
            node = self.nodes.get(str(w.get("id", "")).rsplit("_", 1)[0], w.get("id"))
            out[node] = out.get(node, 0) + int(w.get("user_count") or 0)
        self.last = out
        return out

    def wait_for(self, want: dict[str, int], what: str) -> None:
        try:
            poll(lambda: self.by_worker() == want, timeout=30, interval=0.5, what=what)
        except AssertionError as e:
            raise AssertionError(f"{e}: last {self.last}") from None


def sleep_until(t: float) -> None:
    time.sleep(max(0.0, min(60.0, t - time.monotonic())))


def up_two_workers(workdir, env, emulated_ec2) -> Users:
    assert swarm("up", "master", cwd=workdir, env=env, timeout=180).code == 0
    res = swarm("up", "workers", "-n", "2", cwd=workdir, env=env, timeout=180)
    assert res.code == 0, res.err
    nodes = status(workdir, env)["nodes"]
    master = next(n for n in nodes if n["name"] == "master")
    users = Users(emulated_ec2.host_for(master["id"]))
    users.name(nodes)
    return users


def start_run(run_s: int, bridge_target, workdir, env, tmp_path):
    proc, _, err = start(["run", "-H", bridge_target.url, "-f", "viral_load.py", "--headless",
                          "-u", str(USERS), "-r", str(USERS), "-t", f"{run_s}s"],
                         workdir, env, tmp_path)
    return proc, err


@contextmanager
def torn_down(proc, workdir, env):
    """The run ends (killed if it still runs), then the stack goes, whatever happened."""
    try:
        yield
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        swarm("down", cwd=workdir, env=env, timeout=180)


def users_up(users: Users) -> float:
    """-> when the run's users were all up on its 2 workers (a second or two after its
    start)."""
    poll(lambda: users.by_worker() == {"worker-1": 3, "worker-2": 3}, timeout=90,
         interval=0.5, what="the run to have its users on 2 workers")
    return time.monotonic()


def test_a_worker_joins_and_leaves_a_running_test(workdir, cli_env, ec2_env, emulated_ec2,
                                                  bridge_target, tmp_path):
    env = ec2_stack(workdir, cli_env, ec2_env, STACK)
    users = up_two_workers(workdir, env, emulated_ec2)
    proc, err = start_run(RUN_S, bridge_target, workdir, env, tmp_path)
    with torn_down(proc, workdir, env):
        began = users_up(users)

        # ~15 s in: a third worker joins the running test
        sleep_until(began + 15)
        res = swarm("up", "workers", "-n", "3", cwd=workdir, env=env, timeout=120)
        assert res.code == 0, res.err
        assert "joined the running test: worker-3 (1 process)" in res.err, res.err
        assert "from here" not in res.err, res.err  # the master relayed the run's files
        nodes = status(workdir, env)["nodes"]
        users.name(nodes)
        ips = {n["name"]: n["private_ip"] for n in nodes}
        third = ips["worker-3"]
        w3 = next(n for n in nodes if n["name"] == "worker-3")
        # the relay's fetch records the digest it unpacked; a send from here would not
        got = emulated_ec2.host_for(w3["id"]).exec("cat swarm/.ship/locustfiles.sha256")
        assert got.returncode == 0 and len(got.stdout.strip()) == 64, got
        poll(lambda: bridge_target.clients().get(third, 0) > 20, timeout=30,
             what="worker-3's requests at the target")
        users.wait_for({"worker-1": 2, "worker-2": 2, "worker-3": 2},
                       "the users redistributed over 3 workers")
        assert proc.poll() is None, "the run ended early"

        # ~35 s in: it leaves again, the test goes on
        sleep_until(began + 35)
        res = swarm("up", "workers", "-n", "2", cwd=workdir, env=env, timeout=120)
        assert res.code == 0, res.err
        assert "left the running test: worker-3" in res.err, res.err
        assert "removed worker-3" in res.err, res.err
        users.wait_for({"worker-1": 3, "worker-2": 3}, "the users back on 2 workers")
        assert proc.poll() is None, "the run ended when a worker left"
        shown = swarm("status", cwd=workdir, env={**env, "COLUMNS": "200"}, timeout=60)
        assert "worker-3 joined at" in shown.out and "worker-3 left at" in shown.out, shown.out
        for name in ("worker-1", "worker-2"):
            assert bridge_target.clients().get(ips[name], 0) > 0, name

        code = finish(proc, timeout=RUN_S + 120)
    text = err.read_text()
    assert code == 0, text
    assert "missing workers" not in text and "stayed connected" not in text, text
    assert "worker-3 joined the test at 0:" in text, text
    assert "worker-3 left the test at 0:" in text, text
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
    # gone before the end, its log was kept on the master by `up workers -n 2`
    assert "Starting Locust" in (out / "logs" / "worker-3.log").read_text()

    # every request the target served is in swarm's figures, but those in flight when users
    # stopped (at the end, and worker-3's when it left)
    served = sum(bridge_target.clients().values())
    reported = record["summary"]["total"]["requests"]
    assert served - 2 * USERS <= reported <= served, (reported, served)


LEAVE_RUN_S = 40


def test_down_workers_takes_every_worker_out_of_a_running_test(workdir, cli_env, ec2_env,
                                                                emulated_ec2, bridge_target,
                                                                tmp_path):
    """`swarm down workers` ~10 s into a headless run of 40 s on 2 workers: each leaves the
    test (its Locust tells the master it quits) before its machine goes, and its Locust log is
    kept on the master for the run's results. Locust's master stops the load when its last
    worker quits and waits for its run time: `swarm run` says so, goes on, ends at the run
    time with the figures until the workers left (what the target served), exit 0."""
    env = ec2_stack(workdir, cli_env, ec2_env, STACK)
    users = up_two_workers(workdir, env, emulated_ec2)
    ips = dict(users.ips)
    proc, err = start_run(LEAVE_RUN_S, bridge_target, workdir, env, tmp_path)
    with torn_down(proc, workdir, env):
        began = users_up(users)
        for name in ("worker-1", "worker-2"):
            poll(lambda ip=ips[name]: bridge_target.clients().get(ip, 0) > 0, timeout=30,
                 what=f"{name}'s requests at the target")

        # ~10 s in: every worker leaves, the run goes on
        sleep_until(began + 10)
        res = swarm("down", "workers", cwd=workdir, env=env, timeout=180)
        assert res.code == 0, res.err
        for name in ("worker-1", "worker-2"):
            assert f"left the running test: {name}" in res.err, res.err
        assert "removed 2 node(s): worker-1, worker-2" in res.err, res.err
        assert "not kept" not in res.err, res.err
        assert [n["name"] for n in status(workdir, env)["nodes"]] == ["master"]
        assert proc.poll() is None, "the run ended when its workers left"
        shown = swarm("status", cwd=workdir, env={**env, "COLUMNS": "200"}, timeout=60)
        assert "worker-1 left at" in shown.out and "worker-2 left at" in shown.out, shown.out
        assert proc.poll() is None, "the run ended before its run time"
        served = dict(bridge_target.clients())  # nothing sends any more

        code = finish(proc, timeout=LEAVE_RUN_S + 120)
        took = time.monotonic() - began
    text = err.read_text()
    assert code == 0, text
    for name in ("worker-1", "worker-2"):
        assert f"{name} left the test at 0:" in text, text
    assert "every worker left the test: Locust stopped the load" in text, text
    assert "missing workers" not in text and "stayed connected" not in text, text
    # at its run time (began: the users were up, a second or two after Locust's start)
    assert LEAVE_RUN_S - 10 < took < LEAVE_RUN_S + 30, f"the run took {took:.0f}s"

    out = sorted((workdir / "results" / STACK).iterdir())[-1]
    record = json.loads((out / "run.json").read_text())
    assert record["missing_workers"] == [] and record["exit_code"] == 0, record
    workers = {w["name"]: w for w in record["workers"]}
    assert sorted(workers) == ["worker-1", "worker-2"], record["workers"]
    for w in workers.values():
        assert w["joined_at"] == record["started_at"], w
        assert record["started_at"] < w["left_at"] < record["ended_at"], w
    # the leavers' Locust logs, kept on the master by `down`, came back with the results:
    # each whole, from its start to its graceful stop
    for name in ("worker-1", "worker-2"):
        log = (out / "logs" / f"{name}.log").read_text()
        host = "ip-" + ips[name].replace(".", "-")
        assert f"{host}/INFO/locust.main: Starting Locust" in log, log[-2000:]
        assert "Shutting down (exit code" in log, log[-2000:]
    assert not (out / "left-workers").exists()

    # what the target served from the workers before they left is what swarm reports, less at
    # most what was in flight when they stopped
    assert set(served) == {ips["worker-1"], ips["worker-2"]}, served
    reported = record["summary"]["total"]["requests"]
    assert sum(served.values()) - USERS <= reported <= sum(served.values()), (reported, served)
