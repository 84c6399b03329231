"""Two local stacks on one machine never meet: each master gets free ports of its own (kept
with the stack, shown by status) and listens on the loopback only, so a worker of one stack
can never join the other's master. The configs name no ports, as a new user's don't."""
from __future__ import annotations

import json

from tests.helpers import swarm


def listening(port: int) -> list[str]:
    """Local addresses (hex, as /proc/net/tcp writes them) listening on `port`."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                found.append(local.rsplit(":", 1)[0])
    return found


def test_two_local_stacks_with_default_ports_never_meet(workdir, cli_env, target):
    (workdir / "swarm.toml").write_text('[stack]\nname = "a"\nprovider = "local"\n')
    env_a, env_b = {**cli_env, "SWARM_STACK": "a"}, {**cli_env, "SWARM_STACK": "b"}
    try:
        for env in (env_a, env_b):
            assert swarm("up", "master", cwd=workdir, env=env).code == 0
            assert swarm("up", "workers", "-n", "1", cwd=workdir, env=env).code == 0
        ports = {}
        for name, env in (("a", env_a), ("b", env_b)):
            res = swarm("status", "--json", cwd=workdir, env=env)
            ports[name] = json.loads(res.out)["ports"]
            assert ports[name]["bind"] == "127.0.0.1"
            text = swarm("status", cwd=workdir, env=env).out
            assert f"web UI http://127.0.0.1:{ports[name]['web']}" in text, text
        assert not {ports["a"]["master"], ports["a"]["web"]} & {ports["b"]["master"],
                                                                ports["b"]["web"]}
        assert (ports["a"]["master"], ports["a"]["web"]) != (5557, 8089)

        # a in UI mode, then a headless run of b: each keeps its own worker
        res = swarm("run", "-H", target.url, "-f", "viral_load.py", "-u", "2", cwd=workdir,
                    env=env_a)
        assert res.code == 0, res.err
        assert listening(ports["a"]["master"]) == ["0100007F"]  # 127.0.0.1 only
        res = swarm("run", "-H", target.url, "-f", "viral_load.py", "--headless", "-u", "2",
                    "-t", "3s", cwd=workdir, env=env_b, timeout=120)
        assert res.code == 0, res.err
        assert "2 of 1" not in res.err
        record = json.loads(next((workdir / "results" / "b").glob("*/run.json")).read_text())
        assert record["workers_seen"] == record["workers_expected"] == 1
        live = json.loads(swarm("status", "--json", cwd=workdir, env=env_a).out)["locust"]
        assert live["running"] and live["workers_connected"] == 1, live  # a still has its own
    finally:
        for env in (env_a, env_b):
            swarm("down", cwd=workdir, env=env)


def test_an_argument_locust_refuses_is_exit_2_and_leaves_no_orphan_worker(
        workdir, cli_env, local_toml, target, tmp_path):
    """The master exits at once (argparse); its workers would retry for minutes and join the
    next master on the port. They are stopped, and the user gets Locust's own words."""
    from tests.helpers import processes_under

    local_toml()
    assert swarm("up", "master", cwd=workdir, env=cli_env).code == 0
    assert swarm("up", "workers", "-n", "2", cwd=workdir, env=cli_env).code == 0
    try:
        res = swarm("run", "-H", target.url, "-f", "viral_load.py", "--headless", "-u", "2",
                    "-t", "3s", "--", "--bogus-flag", cwd=workdir, env=cli_env, timeout=120)
        assert res.code == 2, res.err
        assert res.err_lines[-1] == ("error: Locust refused its arguments: unrecognized "
                                     "arguments: --bogus-flag"), res.err
        left = [p for p in processes_under(tmp_path / "state") if "locust" in p]
        assert left == [], left
        res = swarm("run", "-H", target.url, "-f", "viral_load.py", "--headless", "-u", "2",
                    "-t", "2s", cwd=workdir, env=cli_env, timeout=120)
        assert res.code == 0, res.err
        assert "2 of 2 worker process(es) connected" in res.err, res.err
    finally:
        swarm("down", cwd=workdir, env=cli_env)
