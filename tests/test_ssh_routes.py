"""Hosts reached as their users reach them: an ssh_config of aliases and a two-hop ProxyJump
chain, each hop's firewall letting SSH in only from the hop before it (so a chain taken out
of order, or a hop skipped, cannot connect). The CLI in a subprocess, real sshd, real Locust.
"""
from __future__ import annotations

import csv
import json
import queue
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

from tests.emulation.firewall import restore
from tests.helpers import SWARM, assert_error_line, assert_one_error_line, free_port, swarm
from tests.reliability import locust_pids


def _only_from(sources: list[str], *, ports: str = "22") -> str:
    """An iptables table: TCP `ports` open to `sources` only (plus loopback and replies)."""
    lines = ["*filter", ":INPUT DROP [0:0]", ":FORWARD DROP [0:0]", ":OUTPUT ACCEPT [0:0]",
             "-A INPUT -i lo -j ACCEPT",
             "-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"]
    lines += [f"-A INPUT -s {s}/32 -p tcp -m multiport --dports {ports} -j ACCEPT" for s in sources]
    return "\n".join(lines + ["COMMIT"]) + "\n"


def test_hosts_behind_a_two_hop_proxyjump_chain_from_ssh_config_aliases(
        workdir, cli_env, emulated_hosts, bridge_target, tmp_path):
    hs = emulated_hosts(4)
    j1, j2, master, worker = hs.hosts
    key = hs.key_path
    # this machine -> j1 -> j2 -> the load generators; nothing else gets in
    restore(j2.netns, _only_from([j1.ip]))
    restore(master.netns, _only_from([j2.ip]) .replace(
        "COMMIT", f"-A INPUT -s {worker.ip}/32 -p tcp -m multiport --dports 5557,5558 -j ACCEPT\nCOMMIT"))
    restore(worker.netns, _only_from([j2.ip]))
    for h in (j2, master, worker):
        h.firewalled = True      # readiness is asked of its own kernel: this machine is kept out
    ssh_config = tmp_path / "lab_ssh_config"
    ssh_config.write_text(
        f"Host jump1\n  HostName {j1.ip}\n  User root\n  IdentityFile {key}\n"
        f"Host jump2\n  HostName {j2.ip}\n  User root\n  IdentityFile {key}\n"
        f"Host lg-*\n  User root\n  ProxyJump jump1,jump2\n"
        f"Host lg-master\n  HostName {master.ip}\n"
        f"Host lg-w1\n  HostName {worker.ip}\n")
    (workdir / "swarm.toml").write_text(
        '[stack]\nname = "jumps"\nprovider = "hosts"\n'
        f'[hosts]\nmaster = "lg-master"\nworkers = ["lg-w1"]\nssh_key = "{key}"\n'
        f'ssh_config = "{ssh_config}"\n[locust]\nprocesses = 1\n')
    env = cli_env

    res = swarm("up", "master", cwd=workdir, env=env, timeout=180)
    assert res.code == 0, res.err
    res = swarm("up", "workers", "-n", "1", cwd=workdir, env=env, timeout=180)
    assert res.code == 0, res.err
    for h in (master, worker):
        assert "bootstrap done" in (h.home / "swarm" / "bootstrap.log").read_text()
    known = (tmp_path / "state" / "hosts" / "jumps" / "known_hosts").read_text()
    for h in (j1, j2, master, worker):       # every hop pinned, in the stack's own file
        assert h.ip in known, (h.ip, known)

    res = swarm("run", "-H", bridge_target.url, "-f", "signups.py", "--headless", "-u", "4",
                "-r", "4", "-t", "4s", cwd=workdir, env=env, timeout=180)
    assert res.code == 0, res.err
    assert "1 of 1 worker process(es) connected" in res.err
    run_dir = sorted((workdir / "results" / "jumps").iterdir())[-1]
    with open(run_dir / "locust_stats.csv") as f:
        total = next(r for r in csv.DictReader(f) if r["Name"] == "Aggregated")
    assert int(total["Request Count"]) > 0
    assert (run_dir / "logs" / "worker-1.log").stat().st_size > 0

    res = swarm("logs", "worker-1", cwd=workdir, env=env, timeout=60)
    assert res.code == 0 and "locust" in res.out.lower(), (res.out, res.err)

    # `swarm ssh` is OpenSSH itself: the same chain, every hop checked against the same pins;
    # the node sees the connection come from the last jump host.
    res = swarm("ssh", "master", "--", "echo", "$SSH_CONNECTION", cwd=workdir, env=env, timeout=60)
    assert res.code == 0, res.err
    assert res.out.split()[0] == j2.ip, res.out

    # the UI through the same chain
    res = swarm("run", "-H", bridge_target.url, "-f", "signups.py", "-u", "2", cwd=workdir,
                env=env, timeout=120)
    assert res.code == 0, res.err
    port = free_port()
    ui = subprocess.Popen([*SWARM, "ui", "--port", str(port)], cwd=workdir, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = ui.stdout.readline().strip()
        assert url == f"http://127.0.0.1:{port}", (url, ui.stderr.read() if ui.poll() is not None else "")
        got = json.loads(urllib.request.urlopen(url + "/stats/requests", timeout=15).read())
        assert got["worker_count"] == 1
    finally:
        ui.send_signal(signal.SIGINT)
        assert ui.wait(timeout=20) == 0

    # `logs -f`: a stream per node, each through the chain, until Ctrl-C
    follow = subprocess.Popen([*SWARM, "logs", "-f", "all"], cwd=workdir, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(ln) for ln in follow.stdout], daemon=True).start()
    got: set[str] = set()
    try:
        deadline = time.monotonic() + 30
        while got != {"master", "worker-1"} and time.monotonic() < deadline:
            try:
                got.add(lines.get(timeout=1).split(" | ", 1)[0])
            except queue.Empty:
                pass
        assert {"master", "worker-1"} <= got, got
    finally:
        follow.send_signal(signal.SIGINT)
        assert follow.wait(timeout=20) == 0

    res = swarm("down", cwd=workdir, env=env, timeout=120)
    assert res.code == 0, res.err
    assert locust_pids(master) == [] and locust_pids(worker) == []
    assert not (master.home / "swarm").exists()

    # A jump host behind the first one with a new key is refused, as a node would be.
    j2.regen_host_key()
    before = (tmp_path / "state" / "hosts" / "jumps" / "known_hosts").read_text()
    res = swarm("up", "master", cwd=workdir, env=env, timeout=120)
    assert_error_line(res, 1, "host key changed", j2.ip)
    assert (tmp_path / "state" / "hosts" / "jumps" / "known_hosts").read_text() == before
    assert not (master.home / "swarm").exists()


def test_ssh_config_mistakes_are_one_line_before_anything_starts(workdir, cli_env, tmp_path):
    (workdir / "swarm.toml").write_text(
        '[stack]\nname = "cfg"\nprovider = "hosts"\n'
        f'[hosts]\nmaster = "lg-master"\nssh_config = "{tmp_path}/nope"\n')
    res = swarm("up", "master", cwd=workdir, env=cli_env, timeout=60)
    assert_one_error_line(res, 2, "ssh_config file", "not found")
    cfg = tmp_path / "cfg"
    cfg.write_text("Host lg-master\n  HostName 127.0.0.1\n")     # no User anywhere
    (workdir / "swarm.toml").write_text(
        '[stack]\nname = "cfg"\nprovider = "hosts"\n'
        f'[hosts]\nmaster = "lg-master"\nssh_config = "{cfg}"\n')
    res = swarm("up", "master", cwd=workdir, env=cli_env, timeout=60)
    assert_one_error_line(res, 2, "[hosts] master", "'lg-master' names no user")
    assert not (tmp_path / "state" / "hosts" / "cfg" / "nodes.json").exists()


def test_match_exec_in_ssh_config_works_though_paramiko_is_imported_without_invoke(tmp_path):
    # swarm imports paramiko without invoke (50 ms of every command); fabric brings invoke
    # back for ssh_config's `Match exec`, which runs its command with it
    cfg = tmp_path / "cfg"
    flag = tmp_path / "on-vpn"
    cfg.write_text(f'Match host lg-master exec "test -e {flag}"\n  User ubuntu\n  Port 2222\n'
                   "Host lg-master\n  HostName 127.0.0.1\n")
    code = (
        "import sys; import swarm.remote.ssh; assert 'invoke' not in sys.modules\n"
        "from swarm.remote.sshconfig import SshConfig\n"
        f"r = SshConfig(__import__('pathlib').Path({str(cfg)!r})).resolve('lg-master')\n"
        "print(r.hop.user if r.user_named else '-', r.hop.port, r.hop.host)\n")
    import sys
    run = lambda: subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 timeout=60)
    res = run()
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["-", "22", "127.0.0.1"]
    flag.write_text("")
    res = run()
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["ubuntu", "2222", "127.0.0.1"]
