import os
import shutil
import signal
from pathlib import Path

import pytest

from tests.helpers import REPO, free_port

pytest_plugins = ["tests.emulation.plugin"]

# Tests press Ctrl-C on the CLI with SIGINT. A runner that started this pytest with SIGINT
# ignored (bash runs a background job so when job control is off, e.g. `cmd &` in a script)
# passes SIG_IGN on to every child: the CLI then never sees the Ctrl-C. A handler, unlike
# SIG_IGN, is reset to the default in each child.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A user's project dir: locustfiles/ + bootstrap/ copies, its own state dir and ports."""
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(REPO / "locustfiles", work / "locustfiles",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "bootstrap", work / "bootstrap")
    state = tmp_path / "state"
    monkeypatch.setenv("SWARM_STATE_DIR", str(state))
    monkeypatch.chdir(work)
    return work


@pytest.fixture
def cli_env(workdir, tmp_path):
    # GITHUB_STEP_SUMMARY: a test's runs never write into the summary of the CI job running it
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "SWARM_", "GITHUB_STEP_SUMMARY"))}
    env["SWARM_STATE_DIR"] = str(tmp_path / "state")
    env["PYTHONPATH"] = str(REPO)
    env["NO_COLOR"] = "1"
    return env


@pytest.fixture
def local_toml(workdir):
    """A local-provider swarm.toml on free ports, so tests never collide with anything."""
    def write(extra: str = "", name: str = "t") -> Path:
        p = workdir / "swarm.toml"
        p.write_text(f'[stack]\nname = "{name}"\nprovider = "local"\n'
                     f"[locust]\nweb_port = {free_port()}\nmaster_port = {free_port()}\n{extra}")
        return p
    return write


@pytest.fixture
def target():
    from swarm.demo import target as target_mod
    srv = target_mod.start("127.0.0.1", 0)
    yield srv
    srv.stop()
