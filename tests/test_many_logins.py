"""Many hosts logging in at once against sshds that drop logins past a low MaxStartups
(3:100:3: a fourth unauthenticated connection is closed before its banner). Real sshd, the
CLI in a subprocess where it is what users run; the direct case with swarm's own runners.

Without the bound per sshd and the retry of a dropped login (hops.LOGINS_AT_ONCE,
LOGIN_TRIES), the proxy-command and the direct cases fail with "Error reading SSH protocol
banner" on some hosts (checked by hand, the bound set to 1000 and one try)."""
from __future__ import annotations

from pathlib import Path

from swarm.models import Node, Role
from swarm.remote.fanout import fan_out
from swarm.remote.ssh import SSHRunner
from tests.emulation.firewall import restore
from tests.helpers import swarm
from tests.reliability import fast_bootstrap
from tests.test_ssh_routes import _only_from

LOW = {"MaxStartups": "3:100:3"}
BEHIND = 12


def test_a_dozen_hosts_behind_a_jump_host_with_a_low_max_startups(
        workdir, cli_env, emulated_hosts, tmp_path, lab):
    js = emulated_hosts(1, sshd_options=LOW)
    jump, jump_key = js.hosts[0], js.key_path
    hs = emulated_hosts(1 + BEHIND)
    key = hs.key_path
    for h in hs.hosts:          # reached through the jump host only
        restore(h.netns, _only_from([jump.ip]))
        h.firewalled = True
    master, *workers = hs.hosts
    known = tmp_path / "jump_known_hosts"
    known.write_text(jump.known_hosts_line + "\n")
    names = "".join(f"Host lg-w{i}\n  HostName {w.ip}\n" for i, w in enumerate(workers, 1))
    head = f"Host jump\n  HostName {jump.ip}\n  User root\n  IdentityFile {jump_key}\n"
    ssh_config = tmp_path / "lab_ssh_config"
    (workdir / "swarm.toml").write_text(
        '[stack]\nname = "many"\nprovider = "hosts"\n'
        f'[hosts]\nmaster = "lg-master"\n'
        f'workers = [{", ".join(f"{chr(34)}lg-w{i}{chr(34)}" for i in range(1, BEHIND + 1))}]\n'
        f'ssh_key = "{key}"\nssh_config = "{ssh_config}"\n[locust]\nprocesses = 1\n')
    fast_bootstrap(workdir)

    # ProxyJump: one login to the jump host, shared by every node behind it.
    ssh_config.write_text(head + f"Host lg-*\n  User root\n  ProxyJump jump\n"
                          f"Host lg-master\n  HostName {master.ip}\n" + names)
    res = swarm("up", "master", cwd=workdir, env=cli_env, timeout=180)
    assert res.code == 0, res.err
    res = swarm("up", "workers", "-n", str(BEHIND), cwd=workdir, env=cli_env, timeout=300)
    assert res.code == 0, res.err
    for h in hs.hosts:
        assert "bootstrap done" in (h.home / "swarm" / "bootstrap.log").read_text()

    # ProxyCommand: every node's `ssh -W` is a login of its own to the jump host: thirteen
    # at once would lose all but three of them there.
    ssh_config.write_text(
        head + "Host lg-*\n  User root\n  ProxyCommand ssh -F none -i " f"{jump_key} "
        f"-o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes -o BatchMode=yes "
        f"-o ConnectTimeout=10 -W %h:%p root@{jump.ip}\n"
        f"Host lg-master\n  HostName {master.ip}\n" + names)
    for _ in range(2):
        res = swarm("killall", cwd=workdir, env=cli_env, timeout=180)
        assert res.code == 0, res.err
        assert "failed" not in res.err, res.err


def test_many_runners_to_one_sshd_with_a_low_max_startups(emulated_hosts, tmp_path):
    hs = emulated_hosts(1, sshd_options=LOW)
    host = hs.hosts[0]
    nodes = [Node(id=f"n{i}", name=f"n{i}", role=Role.WORKER, public_ip=host.ip,
                  private_ip=host.ip) for i in range(24)]
    runners = {n.id: SSHRunner(host.ip, key_file=hs.key_path, known_hosts=tmp_path / "known",
                               label=n.name) for n in nodes}
    try:
        for _ in range(2):
            got = fan_out(nodes, lambda n: runners[n.id].run("echo ok", timeout=30).stdout,
                          what="echo")
            assert [r.value.strip() for r in got] == ["ok"] * len(nodes)
            for r in runners.values():
                r.close()
    finally:
        for r in runners.values():
            r.close()
