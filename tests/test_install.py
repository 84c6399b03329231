"""swarm works where users install it: from its wheel, in an empty directory.

The wheel is built from this checkout (offline: setuptools and wheel come with the test
extra) and installed, as a user would, into a clean venv (`python -m venv`, then `pip install
--no-index` from the wheel and the wheels of its dependencies that tests/run_in_lab.py
downloaded before entering the lab), and with pipx; nothing of the checkout is importable. In
an empty directory: `swarm --version` names the distribution, `swarm init` writes swarm.toml,
locustfiles/ and bootstrap/ from the package and prints the next commands; the local cycle then
runs with them against the demo target; `swarm ui --port` forwards to the local UI; `swarm
demo` runs from the package alone; on emulated EC2, a directory holding only swarm.toml comes
up with the packaged bootstrap.sh, and a project's own bootstrap/ runs it as
$SWARM_DEFAULT_BOOTSTRAP."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from swarm import DISTRIBUTION, __version__
from tests.emulation.plugin import _in_ci
from tests.helpers import REPO, free_port
from tests.reliability import ec2_toml


def run(argv, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=kw.pop("timeout", 300),
                          **kw)


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> list[str]:
    """pip's arguments to install swarm's wheel and its dependencies with no index."""
    deps = os.environ.get("SWARM_TEST_INSTALL_WHEELS", "")
    if not deps or not Path(deps, "complete").is_file():
        msg = (f"no wheels of swarm's dependencies in SWARM_TEST_INSTALL_WHEELS={deps!r}: run "
               "the tests through tests/run_in_lab.py, which downloads them before the lab")
        if _in_ci():
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    tmp = tmp_path_factory.mktemp("wheel")
    built = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                 "--no-index", "-q", "-w", str(tmp / "dist"), str(REPO)], cwd=tmp)
    assert built.returncode == 0, built.stderr
    wheel = next((tmp / "dist").glob("*.whl"))
    assert wheel.name == f"swarm_locust_ec2-{__version__}-py3-none-any.whl"
    return ["--no-index", "--no-compile", "--find-links", str(wheel.parent), "--find-links", deps]


def clean_env(tmp_path: Path, bin_dir: Path) -> dict[str, str]:
    """A user's shell: the install's bin first on PATH, no checkout on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "SWARM_", "PYTHON", "GITHUB_STEP_SUMMARY"))}
    env.update(PATH=f"{bin_dir}:{env.get('PATH', '')}", SWARM_STATE_DIR=str(tmp_path / "state"),
               NO_COLOR="1")
    return env


@pytest.fixture(scope="module")
def installed(wheels, tmp_path_factory) -> Path:
    """The bin/ of a clean venv with swarm's wheel pip-installed into it."""
    venv = tmp_path_factory.mktemp("venv") / "venv"
    made = run([sys.executable, "-m", "venv", str(venv)])
    assert made.returncode == 0, made.stderr
    got = run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *wheels, DISTRIBUTION])
    assert got.returncode == 0, got.stderr
    return venv / "bin"


def test_init_and_a_run_from_the_wheel_in_an_empty_directory(installed, tmp_path, target):
    empty = tmp_path / "project"
    empty.mkdir()
    env = clean_env(tmp_path, installed)
    cli = [str(installed / "swarm")]

    py = str(installed / "python")
    where = run([py, "-c", "import swarm; print(swarm.__file__)"], cwd=empty, env=env)
    assert where.stdout.startswith(str(installed.parent)), where.stdout  # not the checkout
    res = run([*cli, "--version"], cwd=empty, env=env)
    assert res.stdout.strip() == f"swarm {__version__} (pip: swarm-locust-ec2)", res.stdout
    meta = run([py, "-c", "import importlib.metadata as m; print(m.version('swarm-locust-ec2'))"],
               cwd=empty, env=env)
    assert meta.stdout.strip() == __version__, meta.stderr

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
    res = run([str(installed / "swarm"), "demo", "-t", "3s"], cwd=empty,
              env=clean_env(tmp_path, installed))
    assert res.returncode == 0, res.stderr
    assert "the target served" in res.stderr


def test_pipx_installs_the_wheel(wheels, tmp_path):
    """pipx (installed with the test extra) puts `swarm` on PATH from the wheel alone."""
    pipx = shutil.which("pipx", path=str(Path(sys.executable).parent))
    assert pipx, "pipx is in the test extra: pip install -e '.[test]'"
    home = tmp_path / "pipx"
    env = clean_env(tmp_path, home / "bin")
    # its shared venv's pip upgrade looks in the same wheels (the lab has no index)
    env.update(PIPX_HOME=str(home / "home"), PIPX_BIN_DIR=str(home / "bin"),
               PIPX_MAN_DIR=str(home / "man"), PIP_NO_INDEX="1",
               PIP_FIND_LINKS=" ".join(wheels[3::2]))
    got = run([pipx, "install", f"--pip-args={' '.join(wheels)}", DISTRIBUTION], env=env,
              cwd=tmp_path)
    assert got.returncode == 0, got.stdout + got.stderr
    empty = tmp_path / "project"
    empty.mkdir()
    res = run(["swarm", "--version"], cwd=empty, env=env)
    assert res.stdout.strip() == f"swarm {__version__} (pip: swarm-locust-ec2)", res.stderr
    res = run(["swarm", "init"], cwd=empty, env=env)
    assert res.returncode == 0, res.stderr
    assert (empty / "swarm.toml").is_file() and (empty / "bootstrap" / "bootstrap.sh").is_file()


HEALTH = """from locust import HttpUser, constant, task


class Health(HttpUser):
    wait_time = constant(0.2)

    @task
    def health(self):
        self.client.get("/health")
"""


def test_the_headline_flow_on_ec2_from_the_wheel_with_the_packaged_bootstrap(
        installed, tmp_path, ec2_env, emulated_ec2, bridge_target):
    """A directory holding only swarm.toml: `up` ships the packaged bootstrap/; then the
    project's own bootstrap/ wins, and runs the packaged one as $SWARM_DEFAULT_BOOTSTRAP."""
    empty = tmp_path / "project"
    empty.mkdir()
    ec2_toml(empty, ec2_env.subnet_id, name="pkg")
    env = {**clean_env(tmp_path, installed), **ec2_env.env}

    def swarm(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        return run([str(installed / "swarm"), *args], cwd=empty, env=env, timeout=timeout)

    packaged = (REPO / "swarm" / "data" / "scaffold" / "bootstrap" / "bootstrap.sh").read_text()
    try:
        res = swarm("up", "master")
        assert res.returncode == 0, res.stderr
        (master,) = emulated_ec2.hosts.values()
        shipped = master.home / "swarm" / "bootstrap"
        assert (shipped / "bootstrap.sh").read_text() == packaged
        assert "bootstrap done" in (master.home / "swarm" / "bootstrap.log").read_text()

        own = empty / "bootstrap"
        own.mkdir()
        (own / "bootstrap.sh").write_text(
            '#!/usr/bin/env bash\nset -eu\nbash "$SWARM_DEFAULT_BOOTSTRAP" "$@"\n'
            'echo "project step after the default"\n')
        res = swarm("up", "workers", "-n", "1")
        assert res.returncode == 0, res.stderr
        (worker,) = [h for h in emulated_ec2.hosts.values() if h is not master]
        log = (worker.home / "swarm" / "bootstrap.log").read_text()
        assert "bootstrap done" in log and log.rstrip().endswith("project step after the default")

        (empty / "locustfiles").mkdir()
        (empty / "locustfiles" / "health.py").write_text(HEALTH)
        res = swarm("run", "-H", bridge_target.url, "-f", "health.py", "--headless", "-u", "5",
                    "-r", "5", "-t", "3s", timeout=240)
        assert res.returncode == 0, res.stderr
        assert "1 of 1 worker process(es) connected" in res.stderr
        assert bridge_target.counts().get("GET /health", 0) > 0, bridge_target.counts()
    finally:
        res = swarm("down", timeout=120)
    assert res.returncode == 0, res.stderr
    assert emulated_ec2.hosts == {}
