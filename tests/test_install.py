"""swarm works where users install it: from its wheel, in an empty directory.

The wheel is built from this checkout (offline: setuptools and wheel come with the test
extra) and installed on its own into a directory that comes first on PYTHONPATH, so nothing of
the checkout is importable. In an empty directory: `swarm init` writes swarm.toml,
locustfiles/ and bootstrap/ from the package and prints the next commands; the local cycle
then runs with them against the demo target; `swarm ui --port` forwards to the local UI;
`swarm demo` runs from the package alone."""
from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import REPO, free_port


def run(argv, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=kw.pop("timeout", 300),
                          **kw)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    built = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                 "--no-index", "-q", "-w", str(tmp / "dist"), str(REPO)], cwd=tmp)
    assert built.returncode == 0, built.stderr
    wheel = next((tmp / "dist").glob("swarm*.whl"))
    site = tmp / "site"
    got = run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
               "--target", str(site), str(wheel)])
    assert got.returncode == 0, got.stderr
    return site


def test_init_and_a_run_from_the_wheel_in_an_empty_directory(installed, tmp_path, target):
    empty = tmp_path / "project"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SWARM_"))}
    env.update(PYTHONPATH=str(installed), SWARM_STATE_DIR=str(tmp_path / "state"), NO_COLOR="1")
    cli = [sys.executable, "-m", "swarm"]

    where = run([sys.executable, "-c", "import swarm; print(swarm.__file__)"], cwd=empty, env=env)
    assert where.stdout.startswith(str(installed)), where.stdout  # not the checkout

    res = run([*cli, "init"], cwd=empty, env=env)
    assert res.returncode == 0, res.stderr
    assert ("locustfiles/ (common.py, signups.py, typical_load.py, viral_load.py, ws_chat.py, "
            "ws_user.py)") in res.stderr
    assert "python -m swarm.demo.target" in res.stderr and "-f viral_load.py" in res.stderr
    assert (empty / "bootstrap" / "bootstrap.sh").is_file()
    # free ports, so the test never meets another Locust on this machine
    toml = empty / "swarm.toml"
    text = toml.read_text()
    text = text.replace("web_port = 8089", f"web_port = {free_port()}", 1)
    toml.write_text(text.replace("master_port = 5557", f"master_port = {free_port()}", 1))

    def swarm(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        return run([*cli, *args], cwd=empty, env=env, timeout=timeout)

    try:
        assert swarm("up", "master").returncode == 0
        assert swarm("up", "workers", "-n", "2").returncode == 0
        res = swarm("run", "-H", target.url, "-f", "viral_load.py", "--headless", "-u", "5",
                    "-t", "3s")
        assert res.returncode == 0, res.stderr
        assert "Total" in res.stdout

        # the UI in UI mode: `swarm ui --port N` forwards N to it until Ctrl-C
        assert swarm("run", "-H", target.url, "-f", "viral_load.py", "-u", "1").returncode == 0
        port = free_port()
        ui = subprocess.Popen([*cli, "ui", "--port", str(port)], cwd=empty, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert ui.stdout.readline().strip() == f"http://127.0.0.1:{port}"
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=20) as page:
                assert page.status == 200 and b"Locust" in page.read()
        finally:
            ui.send_signal(2)
            ui.wait(timeout=20)
        res = swarm("ui")
        assert res.returncode == 0 and "no tunnel needed" in res.stderr, res.stderr
    finally:
        assert swarm("down").returncode == 0


def test_the_demo_runs_from_the_wheel_alone(installed, tmp_path):
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SWARM_"))}
    env.update(PYTHONPATH=str(installed), SWARM_STATE_DIR=str(tmp_path / "state"), NO_COLOR="1")
    res = run([sys.executable, "-m", "swarm", "demo", "-t", "3s"], cwd=empty, env=env)
    assert res.returncode == 0, res.stderr
    assert "the target served" in res.stderr
