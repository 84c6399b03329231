"""Two `swarm up workers -n 3` started at once on one stack: both launch, then both re-check and
drop the newest extras; once both have returned the stack has exactly 3 workers, and neither
reports the other's dropped nodes as failures."""
from __future__ import annotations

import json
import subprocess

import pytest

from tests.helpers import SWARM, swarm
from tests.reliability import all_instances, ec2_toml, fast_bootstrap, instances, poll


@pytest.mark.parametrize("timing", ["both-launch", "staggered"])
def test_two_concurrent_up_workers_converge_on_n(timing, workdir, cli_env, ec2_env, emulated_ec2,
                                                 tmp_path):
    """both-launch: RunInstances is held 1.5 s, so both commands see 0 workers and launch 3
    each (6), then both drop the 3 newest. staggered: the second starts once the first one's 3
    workers are in EC2 (tagged) and while they bootstrap (3 s each here): it finds them and
    launches none."""
    ec2_toml(workdir, ec2_env.subnet_id, name="race")
    fast_bootstrap(workdir, worker_sleep=3 if timing == "staggered" else 0)
    env = {**cli_env, **ec2_env.env}
    ec2 = emulated_ec2.client()
    assert swarm("up", "master", cwd=workdir, env=env, timeout=120).code == 0
    if timing == "both-launch":
        emulated_ec2.inject("RunInstances", None, delay=1.5, times=2)
    procs = []
    for i in range(2):
        out, err = open(tmp_path / f"out{i}", "wb"), open(tmp_path / f"err{i}", "wb")
        procs.append((subprocess.Popen([*SWARM, "up", "workers", "-n", "3"], cwd=workdir, env=env,
                                       stdout=out, stderr=err, stdin=subprocess.DEVNULL), out, err))
        if timing == "staggered" and i == 0:
            # the first command's launch is visible by its tags (bounded: ~2 s on an idle
            # machine, 60 s for a busy one) and it is still bootstrapping them
            poll(lambda: len(instances(ec2, "race", "worker")) == 3, timeout=60,
                 what="the first command's 3 workers")
            assert procs[0][0].poll() is None, "the first `up` ended before the second started"
    codes = []
    for proc, out, err in procs:
        try:
            codes.append(proc.wait(timeout=180))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
            out.close()
            err.close()
    errs = [(tmp_path / f"err{i}").read_text() for i in range(2)]
    workers = instances(ec2, "race", "worker")
    assert len(workers) == 3, (len(workers), errs)
    assert codes == [0, 0], errs
    assert all("Traceback" not in e for e in errs), errs
    # RunInstances that reached moto, minus the master's
    launched = (emulated_ec2.call_count("RunInstances")
                - emulated_ec2.quirks.count("RunInstances") - 1)
    if timing == "both-launch":
        assert launched == 2 and len(all_instances(ec2)) == 1 + 6
        assert sum("raced this one" in e for e in errs) >= 1, errs
    else:
        assert launched == 1 and len(all_instances(ec2)) == 1 + 3, errs
    # The 3 survivors are live hosts that were bootstrapped, and status agrees.
    for w in workers:
        host = emulated_ec2.host_for(w["InstanceId"])
        assert "bootstrap done" in (host.home / "swarm" / "bootstrap.log").read_text()
    nodes = json.loads(swarm("status", "--json", cwd=workdir, env=env).out)["nodes"]
    assert sorted(n["name"] for n in nodes) == ["master", "worker-1", "worker-2", "worker-3"]
    assert swarm("down", cwd=workdir, env=env, timeout=120).code == 0
    assert instances(ec2, "race") == []
