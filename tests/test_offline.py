"""`[bootstrap] offline = true`: the real install, on nodes that download nothing.

The emulated hosts here are bare (`Lab.add_host(bare=True)`): no Locust and no swarm or lab
venv visible, only the system PATH and its Python. The real bootstrap.sh finds that Python,
makes the venv without pip and installs pip and Locust from the wheelhouse swarm ships. The
lab has no route out, so the wheelhouse was made before it was entered, by swarm's own code
(`swarm wheelhouse` in tests/run_in_lab.py), into the cache named by
SWARM_TEST_WHEELHOUSE_CACHE; the CLI under test only finds it cached.
"""
from __future__ import annotations

import importlib.metadata
import os
import shutil
import sys
from pathlib import Path

import pytest

from swarm.errors import SwarmError, UsageError
from swarm.pipeline import wheelhouse
from swarm.pipeline.wheelhouse import Target
from tests.emulation.plugin import _in_ci
from tests.helpers import free_port, swarm
from tests.reliability import ec2_toml, instances, locust_pids, poll, security_groups
from tests.test_boot import outcomes
from tests.test_relay import SMALL, bytes_in, ssh_counters  # noqa: F401 (a fixture)

VERSION = importlib.metadata.version("locust")
STACK = "offline"
LIMITS = ["/etc/security/limits.d"] if Path("/etc/security/limits.d").is_dir() else []
VENV_LOCUST = "/root/swarm/venv/bin/locust"


def prepared_cache(otel: bool = False) -> str:
    """The cache run_in_lab.py filled (outside the lab); missing: skip, and fail under CI.
    otel: the one of locust[otel] (`swarm wheelhouse --otel`)."""
    cache = os.environ.get("SWARM_TEST_WHEELHOUSE_CACHE", "")
    name = f"locust-otel-{VERSION}" if otel else f"locust-{VERSION}"
    if cache and any(Path(cache, "wheelhouse", name).glob(f"*/{wheelhouse.MANIFEST}")):
        return cache
    msg = (f"no offline wheelhouse {name} in SWARM_TEST_WHEELHOUSE_CACHE="
           f"{cache!r}: run the tests through tests/run_in_lab.py, which makes it before "
           "entering the lab")
    if _in_ci():
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


def test_the_headline_flow_on_bare_ec2_nodes_installs_from_the_wheelhouse(
        workdir, cli_env, ec2_env, emulated_ec2, bridge_target, ssh_counters):
    """up master, up workers -n 2, a headless run, a UI-mode run, killall, down, on EC2 nodes
    as they come: Ubuntu's `ubuntu` user with passwordless sudo (root refuses the key), no
    Locust and no venv, and swarm's default of one Locust process per core. Each node's
    bootstrap finds the system Python, installs from the wheelhouse (never the network: the lab
    has no route out); the Locust that runs is the node's venv's, every forked worker process
    connects, and `killall` leaves none. The wheelhouse crosses this machine's link once: to
    the master, whose relay hands it to the workers."""
    cache = prepared_cache()
    emulated_ec2.host_options = lambda ip, index: {"bare": True, "private_dirs": LIMITS,
                                                   "user": "ubuntu"}
    ec2_toml(workdir, ec2_env.subnet_id, name=STACK, extra="offline = true\n",
             ami="ubuntu-24.04", user=None, processes=None)
    env = {**cli_env, **ec2_env.env, "SWARM_CACHE_DIR": cache}

    def ok(*args: str) -> str:
        res = swarm(*args, cwd=workdir, env=env, timeout=300)
        assert res.code == 0, (args, res.out, res.err)
        return res.err

    err = ok("up", "master")
    assert "using the wheelhouse for cp3" in err, err            # cached: never made in the lab
    assert "sent the wheelhouse (" in err and "to 1 node(s)" in err, err
    (master,) = [emulated_ec2.host_for(i["InstanceId"])
                 for i in instances(emulated_ec2.client(), STACK)]
    assert (master.login_home / "swarm/.ship/wheelhouse.tgz").is_file()   # kept for the relay
    m0 = bytes_in(master)
    err = ok("up", "workers", "-n", "2")
    assert "2 node(s) got the wheelhouse (" in err and "MB) from the master's relay in " in err, err
    assert "sent the wheelhouse" not in err and "from here" not in err, err
    hosts = [emulated_ec2.host_for(i["InstanceId"]) for i in instances(emulated_ec2.client(),
                                                                     STACK)]
    workers = [emulated_ec2.host_for(i["InstanceId"])
               for i in instances(emulated_ec2.client(), STACK, "worker")]
    assert len(hosts) == 3 and len(workers) == 2
    wheels = sum(p.stat().st_size for p in Path(cache, "wheelhouse").rglob("*.whl"))
    assert bytes_in(master) - m0 < SMALL < wheels // 10       # not sent to the master again
    for w in workers:
        assert bytes_in(w) < SMALL, w.name                     # nor to a worker: relayed
    venv = "/home/ubuntu/swarm/venv"
    for host in hosts:
        assert host.bare and host.user == "ubuntu"
        log = (host.login_home / "swarm" / "bootstrap.log").read_text()
        assert "user=ubuntu" in log, log
        assert "using /usr/bin/python3" in log, log
        assert f"creating venv at {venv}" in log, log
        assert (f"installing locust=={VERSION} from the wheelhouse at /home/ubuntu/swarm/"
                "wheelhouse (offline: pip --no-index)") in log, log
        assert f"installed locust {VERSION} at {venv}/bin/locust" in log, log
        assert (host.login_home / "swarm" / "locust-path").read_text().strip() == \
            f"{venv}/bin/locust"
        # nothing else was there to find: no locust on the bare host's PATH, no lab venv
        assert host.exec("command -v locust").returncode != 0
        assert host.exec(f"test -e {sys.prefix}/bin/locust").returncode != 0
        assert Path(sys.prefix, "bin", "locust").exists()           # (it is, on this machine)

    cores = [int(w.exec("nproc", check=True).stdout) for w in workers]
    expected = sum(cores)                   # processes = -1: one worker process per core
    run = ("run", "-H", bridge_target.url, "-f", "viral_load.py", "-u", "8", "-r", "8")
    err = ok(*run, "--headless", "-t", "3s")
    assert f"{expected} of {expected} worker process(es) connected" in err, err
    err = ok(*run)                                  # UI mode: Locust keeps running
    assert f"{expected} of {expected} worker process(es) connected" in err, err
    running = {}
    for host in hosts:
        pids = running[host.name] = locust_pids(host)
        assert pids, host.name
        for pid in pids:
            maps = Path(f"/proc/{pid}/maps").read_text()
            # gevent's C extension is loaded from the node's venv, nothing from the lab's
            assert f"{venv}/lib/python3" in maps and "/gevent/" in maps, host.name
            assert ".pyenv" not in maps and sys.prefix not in maps, host.name
    for w, n in zip(workers, cores, strict=True):
        assert len(running[w.name]) == n + 1, (w.name, running[w.name])   # parent + forks
    ok("killall")
    for host in hosts:
        poll(lambda h=host: not locust_pids(h), timeout=20, what=f"Locust gone from {host.name}")
        assert not set(running[host.name]) & set(host.pids(include_init=True)), host.name
    ok("down")
    assert instances(emulated_ec2.client(), STACK) == []


def test_a_node_that_has_the_wheelhouse_is_not_sent_it_again(workdir, cli_env, emulated_hosts):
    """The node already holds this wheelhouse (its digest matches): `up` sends nothing, says
    so, and the node installs from the copy it has."""
    cache = prepared_cache()
    hs = emulated_hosts(1, bare=True, private_dirs=LIMITS)
    host = hs.hosts[0]
    (made,) = Path(cache, "wheelhouse", f"locust-{VERSION}").glob(f"cp*-*/{wheelhouse.MANIFEST}")
    shutil.copytree(made.parent, host.home / "swarm" / "wheelhouse")
    (workdir / "swarm.toml").write_text(
        f'[stack]\nname = "again"\nprovider = "hosts"\n'
        f'[hosts]\nmaster = "root@{host.ip}"\nworkers = []\nssh_key = "{hs.key_path}"\n'
        f'[bootstrap]\noffline = true\n[locust]\nprocesses = 1\n')
    env = {**cli_env, "SWARM_CACHE_DIR": cache}
    res = swarm("up", "master", cwd=workdir, env=env, timeout=300)
    assert res.code == 0, (res.out, res.err)
    assert "the wheelhouse was on all 1 node(s) already" in res.err, res.err
    assert "sent the wheelhouse" not in res.err, res.err
    log = (host.home / "swarm" / "bootstrap.log").read_text()
    assert f"installed locust {VERSION} at {VENV_LOCUST}" in log, log
    assert swarm("down", cwd=workdir, env=env, timeout=60).code == 0


def test_offline_without_a_usable_python_on_the_node_says_so(workdir, cli_env, emulated_hosts,
                                                             tmp_path):
    """A node whose Pythons are all older than 3.11 (Ubuntu 22.04's 3.10): offline mode cannot
    apt-install one, so bootstrap fails with one reason naming it, before any wheelhouse is
    sent; `up` exits 1 and `down` forgets the host."""
    hs = emulated_hosts(1, bare=True, private_dirs=["/usr/local/sbin", *LIMITS])
    host = hs.hosts[0]
    for name in ("python3.13", "python3.12", "python3.11", "python3"):
        shim = host.private["/usr/local/sbin"] / name    # first on PATH: hides /usr/bin's
        shim.write_text("#!/bin/sh\n# a Python 3.10: too old for Locust 2.4x\n"
                        "[ \"$1\" = --version ] && { echo 'Python 3.10.12'; exit 0; }\nexit 1\n")
        shim.chmod(0o755)
    given = tmp_path / "wheels"       # a prepared wheelhouse: its names are all `up` checks
    given.mkdir()
    for name in (f"locust-{VERSION}-py3-none-any.whl", "pip-24.0-py3-none-any.whl"):
        (given / name).write_bytes(b"")
    (workdir / "swarm.toml").write_text(
        f'[stack]\nname = "nopy"\nprovider = "hosts"\n'
        f'[hosts]\nmaster = "root@{host.ip}"\nworkers = []\nssh_key = "{hs.key_path}"\n'
        f'[bootstrap]\noffline = true\nwheelhouse = "{given}"\n[locust]\nprocesses = 1\n')
    res = swarm("up", "master", cwd=workdir, env=cli_env, timeout=120)
    assert res.code == 1, (res.out, res.err)
    reason = ("no Python >= 3.11 on this node (python3.13, python3.12, python3.11, python3), "
              "and offline mode installs no system packages: use an image with Python 3.11+ "
              "(ubuntu-24.04 has 3.12) or set [bootstrap] offline = false")
    assert f"failed: bootstrap failed (exit 1): {reason}" == outcomes(res.out), res.out
    assert res.err_lines[-1].startswith("error: bootstrap failed on 1 of 1 node(s)"), res.err
    assert not (host.home / "swarm" / "wheelhouse").exists()
    assert swarm("down", cwd=workdir, env=cli_env, timeout=60).code == 0


def test_offline_without_an_index_on_the_controller_fails_before_a_launch(
        workdir, cli_env, ec2_env, emulated_ec2, tmp_path):
    """Nothing cached and this machine's pip cannot reach its index: one `error:` line with
    pip's own reason, before any instance, security group or key pair exists."""
    ec2_toml(workdir, ec2_env.subnet_id, name=STACK, extra="offline = true\n")
    closed = free_port()                       # nothing listens there: refused at once
    env = {**cli_env, **ec2_env.env, "SWARM_CACHE_DIR": str(tmp_path / "empty-cache"),
           "PIP_CONFIG_FILE": os.devnull, "PIP_FIND_LINKS": "", "PIP_EXTRA_INDEX_URL": "",
           "PIP_INDEX_URL": f"http://127.0.0.1:{closed}/simple", "PIP_RETRIES": "0",
           "PIP_TIMEOUT": "3"}
    res = swarm("up", "master", cwd=workdir, env=env, timeout=120)
    assert res.code == 1, (res.out, res.err)
    assert len(res.err_lines) == 1, res.err
    line = res.err_lines[0]
    assert line.startswith(f"error: [bootstrap] offline = true: cannot get locust=={VERSION} "
                           "for the nodes' wheelhouse: pip download failed: ERROR: "), line
    assert "`swarm wheelhouse`" in line, line
    ec2 = emulated_ec2.client()
    assert instances(ec2, STACK) == [] and security_groups(ec2, STACK) == []


def test_a_wheelhouse_without_offline_is_refused(workdir, cli_env):
    (workdir / "swarm.toml").write_text('[bootstrap]\nwheelhouse = "wheels"\n')
    res = swarm("up", "master", cwd=workdir, env=cli_env, timeout=60)
    assert res.code == 2, res.err
    assert res.err_lines == [f"error: {workdir / 'swarm.toml'}:2: [bootstrap] wheelhouse is only "
                             "used with offline = true: set it too, or drop wheelhouse"]


def test_the_wheel_tags_a_node_accepts():
    """pip expands manylinux2014 to 2010 and 1 by itself, not PEP 600 tags: each glibc from
    the node's down to 2.17 is listed; musl likewise."""
    glibc = Target("3.12", "x86_64", "glibc-2.39").platforms()
    assert glibc[0] == "manylinux_2_39_x86_64" and glibc[-2] == "manylinux_2_17_x86_64"
    assert glibc[-1] == "manylinux2014_x86_64" and len(glibc) == 39 - 17 + 2
    assert Target("3.11", "aarch64", "musl-1.2.4").platforms() == [
        "musllinux_1_2_aarch64", "musllinux_1_1_aarch64"]
    assert Target("3.12", "x86_64", "glibc-2.39").key == "cp312-glibc-2.39-x86_64"
    assert wheelhouse.parse_target("cp312-glibc-2.39-x86_64") == Target(
        "3.12", "x86_64", "glibc-2.39")
    with pytest.raises(SwarmError, match="older than any wheel"):
        Target("3.11", "x86_64", "glibc-2.12").platforms()
    with pytest.raises(UsageError, match="--for must look like"):
        wheelhouse.parse_target("py3.12-linux")
    assert wheelhouse.pip_reason("WARNING: x\nERROR: No matching distribution\nWARNING: y\n") \
        == "ERROR: No matching distribution"
