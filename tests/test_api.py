"""swarm.Stack, the Python API, as a pytest user drives it: in this process, with real Locust
on local and on emulated EC2 (moto + a real sshd per instance)."""
import os
import subprocess
import sys

import pytest

import swarm
from swarm.errors import ConfigError
from swarm.pipeline.judge import Verdict
from tests.helpers import REPO, free_port, processes_under
from tests.reliability import ec2_toml, fast_bootstrap, instances, locust_pids


def local_tables(name: str = "api") -> dict:
    return {"stack": {"name": name, "provider": "local"},
            "locust": {"web_port": free_port(), "master_port": free_port()}}


def test_a_local_cycle_in_a_with_block(workdir, target, tmp_path):
    state = tmp_path / "state"
    with swarm.Stack(local_tables()) as s:
        s.up_master()
        s.scale_workers(2)
        assert sorted(n.name for n in s.session.nodes()) == ["master", "worker-1", "worker-2"]
        result = s.run(host=target.url, locustfile="viral_load.py", users=10, spawn_rate=10,
                       run_time="3s", checks=["fail_ratio<1%", "rps<0.001", "p95[no such]<1s"])
    assert processes_under(state) == []           # down ran: no Locust, no node left
    assert not (state / "local" / "api").exists()

    total = result.stat()
    assert total is result.summary.total and total.requests > 0 and total.failures == 0
    # Every request Locust counted was served; at stop a user may lose one in flight.
    assert total.requests <= target.total() <= total.requests + 10
    assert sum(e.requests for e in result.stats) == total.requests
    kandus = result.stat("/kandus/[id]").requests   # Locust's name for GET /kandus/{id}
    assert 0 < kandus <= target.counts()["GET /kandus/{id}"] <= kandus + 10
    assert [(c.check, c.ok) for c in result.checks] == [
        ("fail_ratio<1%", True), ("rps<0.001", False), ("p95[no such]<1s", False)]
    assert "no stats entry named 'no such'" in result.checks[2].says
    assert (result.verdict, result.judgement.exit_code, result.passed) == (Verdict.FAIL, 1, False)
    assert result.results_dir.resolve() == workdir / "results" / "api" / result.run_id
    assert (result.results_dir / "run.json").is_file()
    assert result.outcome.workers_expected == 2


def test_the_with_block_downs_the_stack_on_an_exception(workdir, target, tmp_path):
    state = tmp_path / "state"
    with pytest.raises(RuntimeError, match="the test broke"):
        with swarm.Stack(local_tables("boom")) as s:
            s.up_master()
            s.scale_workers(1)
            ui = s.run(host=target.url, locustfile="viral_load.py", users=2, headless=False)
            assert ui.summary is None and ui.run_id is None
            assert any("locust" in p for p in processes_under(state))
            raise RuntimeError("the test broke")
    assert processes_under(state) == []
    assert s.session.nodes() == []


def test_bad_tables_raise_the_config_files_error(workdir):
    (workdir / "swarm.toml").write_text('[locust]\nprocesses = "ten"\n')
    with pytest.raises(ConfigError) as from_file:
        swarm.Stack("swarm.toml")
    with pytest.raises(ConfigError) as from_dict:
        swarm.Stack({"locust": {"processes": "ten"}})
    assert str(from_file.value).endswith(str(from_dict.value))
    assert str(from_dict.value).startswith("[locust] processes ")
    with pytest.raises(ConfigError, match=r"unknown section \[stak\] \(did you mean 'stack'\?\)"):
        swarm.Stack({"stak": {}})


def test_import_swarm_stays_light():
    code = ("import sys, swarm; swarm.Stack; "
            "print(sorted(m for m in ('rich', 'click') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert out.strip() == "[]"


def test_an_ec2_cycle_in_a_with_block(workdir, ec2_env, emulated_ec2, bridge_target,
                                      monkeypatch):
    # The environment as a CI job gives it: the emulator's AWS_* (boto3 reads os.environ).
    for k in list(os.environ):
        if k.startswith("AWS_") or (k.startswith("SWARM_") and k != "SWARM_STATE_DIR"):
            monkeypatch.delenv(k)
    for k, v in ec2_env.env.items():
        monkeypatch.setenv(k, v)
    ec2_toml(workdir, ec2_env.subnet_id, name="apiec2")
    fast_bootstrap(workdir)
    ec2 = emulated_ec2.client()
    with swarm.Stack("swarm.toml") as s:
        s.up_master()
        s.scale_workers(2)
        hosts = list(emulated_ec2.hosts.values())
        assert len(hosts) == 3 and len(instances(ec2, "apiec2")) == 3
        result = s.run(host=bridge_target.url, locustfile="viral_load.py", users=10,
                       spawn_rate=10, run_time="3s", checks=["fail_ratio<1%", "p95<10s"])
        assert all(locust_pids(h) == [] for h in hosts)   # a headless run ends its Locusts
    assert emulated_ec2.hosts == {} and instances(ec2, "apiec2") == []

    total = result.summary.total
    assert total.requests > 0 and total.failures == 0
    assert total.requests <= bridge_target.total() <= total.requests + 10
    assert [(c.check, c.ok) for c in result.checks] == [("fail_ratio<1%", True), ("p95<10s", True)]
    assert result.verdict == Verdict.PASS and result.passed
    assert result.outcome.workers_expected == 2 and result.outcome.workers_seen == 2
    assert (result.results_dir / "logs" / "worker-2.log").is_file()
