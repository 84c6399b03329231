"""Nothing an emulated host does reaches the machine running the tests (issue 15, item 1): each
host has a root of its own (tests/emulation/rootfs.py). The headline flow on EC2, with the real
bootstrap.sh run as root over SSH (it writes /etc/security/limits.d), leaves this machine's
/etc, /usr, /opt and /var/lib as they were, names, sizes and mtimes; and the same snapshot and
diff do catch a host that writes to /etc here (shown on a throw-away /etc, in a mount
namespace of its own, so that this machine's stays untouched)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.emulation.plugin import require_emulation
from tests.emulation.snapshot import KEPT, LEAK, changes, snapshot
from tests.helpers import REPO, swarm
from tests.reliability import ec2_toml, instances

STACK = "untouched"
LIMITS = "/etc/security/limits.d/90-swarm.conf"


def test_the_headline_flow_leaves_this_machine_untouched(workdir, cli_env, ec2_env, emulated_ec2,
                                                         bridge_target):
    ec2_toml(workdir, ec2_env.subnet_id, name=STACK)      # the project's real bootstrap.sh
    env = {**cli_env, **ec2_env.env}
    # A fresh instance has no swarm limits file; this machine may hold one, written by hosts
    # that shared its /etc before they had roots of their own: hidden, so bootstrap writes one.
    emulated_ec2.host_options = lambda ip, index: {"hide": [LIMITS]}

    def ok(*args: str) -> str:
        res = swarm(*args, cwd=workdir, env=env, timeout=240)
        assert res.code == 0, (args, res.out, res.err)
        return res.err

    before = snapshot()
    ok("up", "master")
    ok("up", "workers", "-n", "2")
    hosts = [emulated_ec2.host_for(i["InstanceId"])
             for i in instances(emulated_ec2.client(), STACK)]
    assert len(hosts) == 3
    for host in hosts:                 # bootstrap did write, as root, into the host's layer
        log = (host.login_home / "swarm" / "bootstrap.log").read_text()
        assert f"wrote {LIMITS}" in log, log
        assert "nofile 65535" in (host.layer / LIMITS.lstrip("/")).read_text()
    err = ok("run", "-H", bridge_target.url, "-f", "viral_load.py", "--headless", "-u", "4",
             "-r", "4", "-t", "3s")
    assert "2 of 2 worker process(es) connected" in err, err
    ok("killall")
    ok("down")
    after = snapshot()
    assert changes(before, after) == []


def test_the_check_fails_when_a_host_writes_to_this_machines_etc(tmp_path):
    """In a mount namespace of its own where /etc is a throw-away overlay, a host made without
    a root of its own writes /etc/...: the diff of the same snapshots names it (and the /etc
    directory it changed); what a host with its own root writes there is not in the diff."""
    require_emulation()
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable,
                           "-m", "tests.emulation.snapshot", "proof", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.splitlines()[-1])
    assert f"+ {LEAK}" in got["changes"], got
    assert {line.split()[1] for line in got["changes"]} == {"/etc", LEAK}, got
    assert got["leak_in_throwaway_etc"] and got["kept_in_own_layer"], got
    assert not os.path.exists(LEAK) and not os.path.exists(KEPT)   # this machine's /etc
