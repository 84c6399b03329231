"""Operating a live swarm on emulated EC2: the UI tunnel, live status, a lost worker,
saturation, logs and ssh."""
import json
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from tests.helpers import SWARM, CLIResult, free_port, swarm
from tests.reliability import finish, locust_pids, start
from tests.test_ssh_cycle import ec2_toml

CPU_BOUND = '''import hashlib
from locust import User, task, constant


class Burner(User):
    """Makes no requests: burns the worker's CPU, as a too-heavy locustfile would."""
    wait_time = constant(0)

    @task
    def burn(self):
        data = b"x" * 4096
        for _ in range(2000):
            data = hashlib.sha256(data).digest() * 128
'''


def status_json(workdir, env) -> dict:
    res = swarm("status", "--json", cwd=workdir, env=env, timeout=60)
    assert res.code == 0, res.err
    return json.loads(res.out)


def poll(fn, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout) * 2 + 1):
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def up(workdir, env, workers: int):
    res = swarm("up", "master", cwd=workdir, env=env, timeout=180)
    assert res.code == 0, res.err
    # Priced before launch; moto's price list has no answer, so the figure is "unknown",
    # never made up.
    assert "estimated cost: unknown for the stack (1 master + 0 workers, on-demand)" in res.err
    res = swarm("up", "workers", "-n", str(workers), cwd=workdir, env=env, timeout=180)
    assert res.code == 0, res.err
    assert f"(1 master + {workers} workers, on-demand)" in res.err


def test_ui_tunnel_serves_the_loopback_only_ui(workdir, cli_env, ec2_env, emulated_ec2, bridge_target):
    env = {**cli_env, **ec2_env.env}
    ec2_toml(workdir, ec2_env.subnet_id, name="ui")
    up(workdir, env, 1)
    res = swarm("run", "-H", bridge_target.url, "-f", "viral_load.py", "-u", "2", cwd=workdir, env=env, timeout=120)
    assert res.code == 0, res.err
    master_ip = next(n["private_ip"] for n in status_json(workdir, env)["nodes"] if n["role"] == "master")
    port = free_port()
    ui = subprocess.Popen([*SWARM, "ui", "--port", str(port)], cwd=workdir, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = ui.stdout.readline().strip()       # printed once the tunnel listens
        assert url == f"http://127.0.0.1:{port}", (url, ui.stderr.read() if ui.poll() is not None else "")
        page = urllib.request.urlopen(url + "/", timeout=10).read().decode()
        assert "locust" in page.lower()
        stats = json.loads(urllib.request.urlopen(url + "/stats/requests", timeout=10).read())
        assert stats["worker_count"] == 1
    finally:
        ui.send_signal(signal.SIGINT)
        assert ui.wait(timeout=20) == 0
    # The UI listens on the master's loopback only: its private address refuses.
    with socket.socket() as s:
        s.settimeout(3)
        assert s.connect_ex((master_ip, 8089)) != 0
    assert swarm("down", cwd=workdir, env=env, timeout=120).code == 0


def test_live_status_and_a_killed_worker(workdir, cli_env, ec2_env, emulated_ec2, bridge_target):
    env = {**cli_env, **ec2_env.env}
    ec2_toml(workdir, ec2_env.subnet_id, name="live")
    up(workdir, env, 3)
    run = subprocess.Popen([*SWARM, "run", "-H", bridge_target.url, "-f", "viral_load.py", "--headless",
                            "-u", "9", "-r", "9", "-t", "25s"], cwd=workdir, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def busy():
            loc = status_json(workdir, env)["locust"]
            return loc if loc and loc["workers_connected"] == 3 and loc["total_rps"] > 0 else None
        loc = poll(busy, 60, "3 workers and non-zero rps in status")
        assert loc["state"] in ("spawning", "running") and loc["workers_expected"] == 3
        assert loc["missing"] == []
        assert sorted(w["node"] for w in loc["workers"]) == ["worker-1", "worker-2", "worker-3"]

        nodes = status_json(workdir, env)["nodes"]
        victim = next(n for n in nodes if n["name"] == "worker-2")
        cut = emulated_ec2.host_for(victim["id"]).power_cut()   # the machine dies mid-run, silently

        def lost():
            loc = status_json(workdir, env)["locust"]
            return loc if loc and "worker-2" in loc["missing"] else None
        loc = poll(lost, 40, "worker-2 reported missing")
        print(f"lost worker: status named it {time.monotonic() - cut:.1f}s after the power cut")
        assert loc["workers_connected"] == 2
        out, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert run.returncode == 0, err
    assert "missing workers: worker-2" in err
    assert "Total" in out
    swarm("down", cwd=workdir, env=env, timeout=120)


def test_a_saturated_worker_is_named_and_fails_the_cpu_check(workdir, cli_env, ec2_env,
                                                             emulated_ec2, bridge_target, tmp_path):
    env = {**cli_env, **ec2_env.env}
    ec2_toml(workdir, ec2_env.subnet_id, name="hot")
    (workdir / "locustfiles" / "burn.py").write_text(CPU_BOUND)
    up(workdir, env, 1)
    worker = next(n for n in status_json(workdir, env)["nodes"] if n["name"] == "worker-1")
    host = emulated_ec2.host_for(worker["id"])
    proc, out, err = start(["run", "-H", bridge_target.url, "-f", "burn.py", "--headless", "-u",
                            "2", "-r", "2", "-t", "8s", "--check", "cpu<90%"], workdir, env,
                           tmp_path)
    try:
        # The emulated hosts share this machine's cores with whatever else runs on it (other
        # suites): a burner at normal priority gets ~35% of a core when the machine is busy.
        # At the highest priority it gets a whole core, as on a machine of its own, so the
        # figure measures the locustfile, not the neighbours.
        pids = poll(lambda: locust_pids(host), 60, "worker-1's Locust")
        subprocess.run(["renice", "-n", "-20", "-p", *map(str, pids)], check=True,
                       capture_output=True, timeout=10)
        # With the kernel's autogroups (sched_autogroup_enabled), a nice value only weighs
        # within its session: the session's own group gets the same priority.
        for pid in pids:
            group = Path(f"/proc/{pid}/autogroup")
            if group.exists():
                group.write_text("-20")
        code = finish(proc, timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    res = CLIResult(code, out.read_text(), err.read_text())
    assert res.code == 1, res.err
    assert "saturated: worker-1" in res.err and "swarm up workers -n 2" in res.err
    assert res.err_lines[-1] == "error: the run failed: 1 check(s) failed: cpu<90%"
    swarm("down", cwd=workdir, env=env, timeout=120)


def test_logs_and_ssh(workdir, cli_env, ec2_env, emulated_ec2, bridge_target):
    env = {**cli_env, **ec2_env.env}
    ec2_toml(workdir, ec2_env.subnet_id, name="look")
    up(workdir, env, 1)
    res = swarm("logs", "--bootstrap", "all", cwd=workdir, env=env)
    assert res.code == 0, res.err
    assert "master | " in res.out and "worker-1 | " in res.out and "bootstrap done" in res.out
    res = swarm("run", "-H", bridge_target.url, "-f", "viral_load.py", "--headless", "-u", "2",
                "-t", "2s", cwd=workdir, env=env, timeout=120)
    assert res.code == 0, res.err
    worker = next(n for n in status_json(workdir, env)["nodes"] if n["name"] == "worker-1")
    host = emulated_ec2.host_for(worker["id"])
    res = swarm("logs", "worker-1", cwd=workdir, env=env)
    assert res.code == 0, res.err
    # worker-1's own Locust log of the run (Locust names its host in every line): its start
    # and its end when the master told it to quit
    assert f"{host.name}/INFO/locust.main: Starting Locust" in res.out, res.out
    assert "Got quit message from master" in res.out, res.out
    res = swarm("ssh", "worker-1", "--", "hostname", cwd=workdir, env=env, timeout=60)
    assert res.code == 0, res.err
    assert res.out.strip() == host.name
    cost = status_json(workdir, env)["cost"]
    assert 4 * 3600 - 600 < cost["ttl_s"] <= 4 * 3600       # the default TTL, counting down
    assert "TTL in 3h5" in cost["text"] or "TTL in 4h00" in cost["text"]
    res = swarm("down", cwd=workdir, env=env, timeout=120)
    assert res.code == 0 and "these nodes cost about" in res.err
