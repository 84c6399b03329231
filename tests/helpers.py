"""Shared test helpers: the CLI as a user runs it (a subprocess), and process accounting."""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SWARM = [sys.executable, "-m", "swarm"]


@dataclass
class CLIResult:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def swarm(*args: str, cwd: Path, env: dict[str, str], timeout: float = 120,
          stdin: str | None = None) -> CLIResult:
    proc = subprocess.run([*SWARM, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, input=stdin)
    return CLIResult(proc.returncode, proc.stdout, proc.stderr)


@contextlib.contextmanager
def controller_until_exit(code: str):
    """A Python process (cwd: the repo) running `code`, which must print "closed" once set up
    and then read stdin: it lives until the yielded function closes its stdin, which checks
    that it exits 0. For what a swarm process leaves to happen after its exit. Killed if the
    test fails first."""
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)

    def exit_now() -> None:
        proc.stdin.close()
        assert proc.wait(timeout=20) == 0

    try:
        assert proc.stdout.readline() == "closed\n"
        yield exit_now
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def processes_under(root: Path) -> list[str]:
    """Command lines of live processes whose working directory is inside root."""
    root = str(root.resolve())
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if cwd == root or cwd.startswith(root + "/"):
            found.append(f"{pid} {cmd}")
    return found


def assert_one_error_line(res: CLIResult, code: int, *needles: str) -> None:
    assert res.code == code, (res.code, res.out, res.err)
    assert len(res.err_lines) == 1, res.err
    line = res.err_lines[0]
    assert line.startswith("error: "), line
    assert "Traceback" not in res.err
    for n in needles:
        assert n in line, (n, line)


def assert_error_line(res: CLIResult, code: int, *needles: str) -> None:
    """An operation that failed midway: progress lines may come first, the error is one line."""
    assert res.code == code, (res.code, res.out, res.err)
    assert "Traceback" not in res.err
    line = res.err_lines[-1]
    assert line.startswith("error: "), line
    for n in needles:
        assert n in line, (n, line)


def fake_aws_env(monkeypatch, tmp_path: Path, region: str) -> None:
    """Fake credentials only: no profile, endpoint, instance metadata or real AWS config files."""
    for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN",
                "AWS_REGION", "AWS_ENDPOINT_URL_EC2", "AWS_ENDPOINT_URL_SSM",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", region)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("SWARM_STATE_DIR", str(tmp_path / "state"))


_LOADERS: dict = {}


def share_botocore_loader(monkeypatch) -> None:
    """Every provider makes its own boto3.Session; share one model loader between them so
    the (large) EC2 service model is parsed once per run instead of once per session."""
    import botocore.loaders
    import botocore.session

    def create_loader(search_path_string=None):
        if search_path_string not in _LOADERS:
            _LOADERS[search_path_string] = botocore.loaders.create_loader(search_path_string)
        return _LOADERS[search_path_string]

    monkeypatch.setattr(botocore.session, "create_loader", create_loader)
