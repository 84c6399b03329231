"""WebSocket load as users run it: ws_chat.py (on ws_user.py) with real Locust against the demo
target's chat rooms, the CLI in a subprocess. What Locust reports per stats name is held
against what the target counted.

In flight: a ws_chat client waits for its message to come back before it sends the next, so
at most one message per client is in flight when the run stops. Such a message may have been
counted by the target (received, broadcast) without its round trip being reported by Locust:
target received - Locust's `WS rtt` requests is between 0 and the number of clients. The same
bound holds for handshakes (a client stopped mid-handshake).
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
from pathlib import Path

import pytest

from tests.helpers import REPO, free_port, processes_under, swarm
from tests.test_ssh_cycle import ec2_toml, latest_run

ROOM = "{name}"


def ws_counts(srv) -> dict[str, int]:
    counts = srv.counts()
    return {k: counts.get(f"WS {k} /ws/room/{ROOM}", 0) for k in ("open", "recv", "sent")}


def stats_rows(run_dir: Path) -> dict[str, dict[str, str]]:
    text = (run_dir / "locust_stats.csv").read_text()
    return {r["Name"]: r for r in csv.DictReader(io.StringIO(text))}


def assert_counts_match(rows: dict[str, dict[str, str]], seen: dict[str, int], users: int) -> None:
    connects, rtts = int(rows["WS connect"]["Request Count"]), int(rows["WS rtt"]["Request Count"])
    assert rows["WS connect"]["Type"] == rows["WS rtt"]["Type"] == "WS"
    assert 0 <= seen["open"] - connects <= users, (seen, connects)
    assert 0 <= seen["recv"] - rtts <= users, (seen, rtts)
    assert int(rows["WS rtt"]["Failure Count"]) == 0, rows["WS rtt"]
    # every reported push and round trip is a message the target handed to a client
    assert rtts + int(rows.get("WS recv", {}).get("Request Count", 0)) <= seen["sent"], (rows, seen)


# -- on emulated EC2: master + 2 workers, the target on the lab's bridge --------------------

def test_ws_chat_on_ec2_counts_what_the_target_saw(workdir, cli_env, ec2_env, emulated_ec2,
                                                   bridge_target):
    env = {**cli_env, **ec2_env.env}
    ec2_toml(workdir, ec2_env.subnet_id, name="ws")
    assert swarm("up", "master", cwd=workdir, env=env, timeout=180).code == 0
    try:
        res = swarm("up", "workers", "-n", "2", cwd=workdir, env=env, timeout=180)
        assert res.code == 0, res.err
        users = 10
        # one check holds and one cannot: both are judged, the run fails naming the second;
        # --ws-rate reaches the workers as a Locust custom argument (4/s, not the default 1/s)
        res = swarm("run", "-H", bridge_target.url, "-f", "ws_chat.py", "--headless",
                    "-u", str(users), "-r", str(users), "-t", "6s",
                    "--check", "p95[WS rtt]<5s", "--check", "p95[WS rtt]<0.001ms",
                    "--check", "p95[WS connect]<5s",
                    "--", "--ws-rate", "4", "--ws-room", "ec2",
                    cwd=workdir, env=env, timeout=240)
        assert "2 of 2 worker process(es) connected" in res.err, res.err
        assert "check p95[WS rtt]<5s: pass" in res.err, res.err
        assert "check p95[WS connect]<5s: pass" in res.err, res.err
        assert "check p95[WS rtt]<0.001ms: FAIL" in res.err, res.err
        assert res.code == 1 and "1 check(s) failed: p95[WS rtt]<0.001ms" in res.err_lines[-1], res.err
        rows = stats_rows(latest_run(workdir, "ws"))
        seen = ws_counts(bridge_target)
        assert int(rows["WS connect"]["Request Count"]) == users, rows["WS connect"]
        assert int(rows["WS rtt"]["Request Count"]) > 100, rows["WS rtt"]   # 10 clients at 4/s
        assert_counts_match(rows, seen, users)
        assert int(rows["WS recv"]["Request Count"]) > 0   # the others' messages, pushed
    finally:
        assert swarm("down", cwd=workdir, env=env, timeout=120).code == 0


# -- the four seed profiles of swarm.toml.example, on local --------------------------------

@pytest.fixture(scope="module")
def example_stack(tmp_path_factory):
    """A local stack (master + 1 worker) whose swarm.toml is `swarm init`'s, on free ports."""
    root = tmp_path_factory.mktemp("wsprofiles")
    work, state = root / "work", root / "state"
    work.mkdir()
    shutil.copytree(REPO / "locustfiles", work / "locustfiles",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SWARM_"))}
    env.update(SWARM_STATE_DIR=str(state), PYTHONPATH=str(REPO), NO_COLOR="1")
    assert swarm("init", cwd=work, env=env).code == 0
    toml = work / "swarm.toml"
    text = toml.read_text().replace('name = "default"', 'name = "wsprof"')
    text = text.replace("web_port = 8089", f"web_port = {free_port()}")
    toml.write_text(text.replace("master_port = 5557", f"master_port = {free_port()}"))
    assert swarm("up", "master", cwd=work, env=env).code == 0
    try:
        assert swarm("up", "workers", "-n", "1", cwd=work, env=env).code == 0
        yield work, env
    finally:
        swarm("down", cwd=work, env=env)


# profile -> (its checks as judged, users for this short run: light's own 10, the others
# scaled down so a 2-core machine runs them in seconds; flags win over a profile)
PROFILES = {
    "light": (["avg[WS rtt]<50ms", "success>99.5%"], None),
    "medium": (["avg[WS rtt]<100ms", "success>99%"], 10),
    "heavy": (["avg[WS rtt]<200ms", "success>98%"], 10),
    "stress": (["avg[WS rtt]<500ms", "success>95%"], 10),
}


@pytest.mark.parametrize("profile", PROFILES)
def test_a_seed_profile_runs_with_its_own_checks(profile, example_stack, target):
    work, env = example_stack
    checks, users = PROFILES[profile]
    size = ("-u", str(users), "-r", str(users)) if users else ()
    res = swarm("run", "-H", target.url, "-f", "ws_chat.py", "--headless", "--profile", profile,
                *size, "-t", "3s", cwd=work, env=env, timeout=120)
    assert res.code == 0, res.err
    for check in checks:
        assert f"check {check}: pass" in res.err, res.err
    record = json.loads((latest_run(work, "wsprof") / "run.json").read_text())
    assert record["profile"] == profile
    assert [c["check"] for c in record["checks"]] == checks
    assert all(c["ok"] for c in record["checks"]), record["checks"]
    rows = stats_rows(latest_run(work, "wsprof"))
    assert_counts_match(rows, ws_counts(target), users or 10)


def test_demo_ws_runs_the_light_scenario_to_its_end(workdir, cli_env, tmp_path):
    res = swarm("demo", "--ws", cwd=workdir, env=cli_env, timeout=120)
    assert res.code == 0, res.err
    assert "WS rtt" in res.out
    line = [l for l in res.err_lines if l.startswith("the target accepted")][0]
    m = re.search(r"accepted (\d+) WebSocket connections, received (\d+) messages and sent "
                  r"(\d+) to room members; Locust counted (\d+) WS connect, (\d+) WS rtt and "
                  r"(\d+) WS recv with 0 failures across 2 workers", line)
    assert m, line
    opened, received, sent, connects, rtts, pushes = map(int, m.groups())
    # light: 10 clients x 10 messages (its env), every one sent and echoed well within 10 s
    assert (opened, received, connects, rtts) == (10, 100, 10, 100), line
    assert rtts + pushes == sent, line
    assert "check avg[WS rtt]<50ms: pass" in res.err and "check success>99.5%: pass" in res.err
    assert processes_under(tmp_path / "state") == []


MISBEHAVE = '''from locust import constant, task

from ws_user import WebSocketUser


class Misbehave(WebSocketUser):
    wait_time = constant(0.2)

    @task
    def go(self):
        self.ws_timeout = 5.0
        if not self.connected:
            self.connect("/ws/echo")
            return
        self.ws_timeout = 1e-6    # the echo cannot be back this soon
        self.rtt()
        self.ws_timeout = 5.0
        # just over the target's 1 MiB limit, the excess in the last bytes: a 1009 close
        self.rtt(pad="x" * ((1 << 20) - 10))
'''


def test_the_ws_user_reports_timeouts_and_abnormal_closes_as_failures(example_stack, target):
    work, env = example_stack
    (work / "locustfiles" / "ws_misbehave.py").write_text(MISBEHAVE)
    res = swarm("run", "-H", target.url, "-f", "ws_misbehave.py", "--headless", "-u", "1",
                "-r", "1", "-t", "2s", cwd=work, env=env, timeout=120)
    assert res.code == 1 and "request(s) failed" in res.err_lines[-1], res.err
    text = (latest_run(work, "wsprof") / "locust_failures.csv").read_text()
    failures = {(r["Name"], r["Error"]) for r in csv.DictReader(io.StringIO(text))}
    assert ("WS rtt", "EchoTimeout('no echo within 1e-06 s')") in failures, failures
    assert ("WS close", "WebSocketClosed('closed by the server: 1009 message too big')") \
        in failures, failures
    assert ("WS rtt", "WebSocketClosed('closed by the server (1009)')") in failures, failures
