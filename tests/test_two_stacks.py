"""Two stacks in one region: stack A goes through up, run and down while stack B runs Locust in
UI mode. B must not notice: its instances, security group, key pair (in AWS and on disk),
known_hosts and Locust processes are exactly as they were, and its load never stops."""
from __future__ import annotations

import json

from tests.helpers import swarm
from tests.reliability import (ec2_toml, fast_bootstrap, instances, key_pairs, locust_pids, poll,
                               security_groups)


def snapshot(emulated_ec2, state_dir, stack: str) -> dict:
    ec2 = emulated_ec2.client()
    insts = instances(ec2, stack)
    hosts = {i["InstanceId"]: emulated_ec2.host_for(i["InstanceId"]) for i in insts}
    local = state_dir / "ec2" / "us-east-1" / stack
    return {
        "instances": sorted((i["InstanceId"], i["State"]["Name"], i["PrivateIpAddress"],
                             tuple(g["GroupId"] for g in i["SecurityGroups"]), i["KeyName"])
                            for i in insts),
        "groups": sorted((g["GroupId"], g["GroupName"], json.dumps(g["IpPermissions"], sort_keys=True))
                         for g in security_groups(ec2, stack)),
        "key_pairs": sorted((k["KeyName"], k["KeyFingerprint"]) for k in key_pairs(ec2, stack)),
        "local_files": {p.name: p.read_bytes() for p in sorted(local.iterdir()) if p.is_file()},
        "locust": {iid: locust_pids(h) for iid, h in hosts.items()},
    }


def test_stack_a_lives_and_dies_while_stack_b_runs(workdir, cli_env, ec2_env, emulated_ec2,
                                                    bridge_target, tmp_path):
    ec2_toml(workdir, ec2_env.subnet_id, name="unused")
    fast_bootstrap(workdir)
    env = {**cli_env, **ec2_env.env}

    def cli(stack, *args, timeout=120):
        res = swarm("--stack", stack, *args, cwd=workdir, env=env, timeout=timeout)
        assert res.code == 0, (stack, args, res.err)
        return res

    cli("b", "up", "master")
    cli("b", "up", "workers", "-n", "1")
    cli("b", "run", "-H", bridge_target.url, "-f", "viral_load.py", "-u", "2", "-r", "2")  # UI
    # Start the load as a user does in the web UI (`swarm ui`): POST /swarm on the master.
    b_master = [h for iid, h in emulated_ec2.hosts.items()
                if iid == instances(emulated_ec2.client(), "b", "master")[0]["InstanceId"]][0]
    start = ("import urllib.request as u; u.urlopen(u.Request('http://127.0.0.1:8089/swarm', "
             f"data=b'user_count=2&spawn_rate=2&host={bridge_target.url}'), timeout=10).read()")
    b_master.exec(["python3", "-c", start], check=True, timeout=30)
    poll(lambda: bridge_target.total() > 5, timeout=30, what="B's load")
    before = snapshot(emulated_ec2, tmp_path / "state", "b")
    assert len(before["instances"]) == 2 and len(before["groups"]) == 1
    assert len(before["key_pairs"]) == 1 and "id_swarm" in before["local_files"]
    assert all(before["locust"].values()), before["locust"]

    cli("a", "up", "master")
    cli("a", "up", "workers", "-n", "1")
    assert len(instances(emulated_ec2.client())) == 4            # both stacks, one region
    res = cli("a", "run", "-H", bridge_target.url, "-f", "viral_load.py", "--headless", "-u", "2",
              "-r", "2", "-t", "3s")
    assert "1 of 1 worker process(es) connected" in res.err        # A's worker, not B's
    cli("a", "killall")
    cli("a", "down")
    ec2 = emulated_ec2.client()
    assert instances(ec2, "a") == [] and security_groups(ec2, "a") == [] and key_pairs(ec2, "a") == []
    assert not (tmp_path / "state" / "ec2" / "us-east-1" / "a").exists()

    after = snapshot(emulated_ec2, tmp_path / "state", "b")
    assert after == before
    # and B's Locust still makes load
    seen = bridge_target.total()
    try:
        poll(lambda: bridge_target.total() > seen + 5, timeout=30, what="B's load to go on")
    except AssertionError:
        r = b_master.exec("curl -s http://127.0.0.1:8089/stats/requests; tail -n 30 swarm/locust.log")
        print(r.stdout[-3000:], r.stderr)
        raise
    status = json.loads(cli("b", "status", "--json").out)
    assert sorted(n["name"] for n in status["nodes"]) == ["master", "worker-1"]

    cli("b", "down")
    assert instances(ec2) == [] and security_groups(ec2, "b") == [] and key_pairs(ec2, "b") == []
