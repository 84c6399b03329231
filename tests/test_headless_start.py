"""A headless run with one Locust process per core (swarm's default) on EC2: each instance is
tagged with its type's vCPUs at launch (swarm:vcpus), so the master's --expect-workers is known
before the workers answer and the master starts in its first exec, before them (started after
them, at 100 workers the first ones waited past Locust's 5 s for its ack and said hello twice,
and the master restarted its spawn). A tag that is wrong (a worker whose cores differ from its
type's) costs a restart, never a wrong count. Counted from the master's sshd log: its execs
per run, with and without the tags."""
from __future__ import annotations

import json

from tests.helpers import swarm
from tests.reliability import ec2_toml, fast_bootstrap, instances
from tests.test_relay import execs, hosts_by_name

STACK = "cores"
VCPUS = "swarm:vcpus"


def _tags(inst) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in inst.get("Tags", [])}


def test_a_headless_master_with_one_process_per_core_starts_first(
        workdir, cli_env, ec2_env, emulated_ec2, bridge_target):
    ec2_toml(workdir, ec2_env.subnet_id, name=STACK, processes=None)   # one per core
    fast_bootstrap(workdir)
    env = {**cli_env, **ec2_env.env}
    ec2 = emulated_ec2.client()

    def run() -> str:
        res = swarm("run", "-H", bridge_target.url, "-f", "signups.py", "--headless", "-u", "4",
                    "-r", "4", "-t", "2s", cwd=workdir, env=env, timeout=180)
        assert res.code == 0, res.out + res.err
        return res.err

    try:
        assert swarm("up", "master", cwd=workdir, env=env, timeout=180).code == 0
        assert swarm("up", "workers", "-n", "2", cwd=workdir, env=env, timeout=180).code == 0
        nodes = instances(ec2, STACK)
        assert {_tags(i).get(VCPUS) for i in nodes} == {"2"}          # c5.large: 2 vCPUs
        hosts = hosts_by_name(emulated_ec2, workdir, env)
        master, workers = hosts["master"], [hosts["worker-1"], hosts["worker-2"]]
        cores = {int(w.exec("nproc", check=True).stdout) for w in workers}
        assert len(cores) == 1
        (n,) = cores
        total = 2 * n
        worker_ids = [i["InstanceId"] for i in instances(ec2, STACK, "worker")]
        ec2.create_tags(Resources=worker_ids, Tags=[{"Key": VCPUS, "Value": str(n)}])
        run()                                    # the first run ships the locustfiles

        m0 = execs(master)
        err = run()                              # tagged: the master starts in its first exec
        tagged = execs(master) - m0
        assert f"{total} of {total} worker process(es) connected" in err, err

        ec2.delete_tags(Resources=worker_ids, Tags=[{"Key": VCPUS}])
        m0 = execs(master)
        err = run()                              # untagged: its start waits for the workers
        assert execs(master) - m0 == tagged + 1, (tagged, execs(master) - m0)
        assert f"{total} of {total} worker process(es) connected" in err, err

        # a tag that says more cores than the workers have: one restart, the right count
        ec2.create_tags(Resources=worker_ids, Tags=[{"Key": VCPUS, "Value": str(n + 2)}])
        m0 = execs(master)
        err = run()
        assert execs(master) - m0 == tagged + 2, (tagged, execs(master) - m0)
        assert f"{total} of {total} worker process(es) connected" in err, err
        latest = sorted((workdir / "results" / STACK).iterdir())[-1]
        record = json.loads((latest / "run.json").read_text())
        assert record["summary"]["total"]["requests"] > 0
        assert bridge_target.total() > 0
    finally:
        swarm("down", cwd=workdir, env=env, timeout=180)
