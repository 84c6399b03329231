"""[locust] worker_args and env reach every Locust at start-up, a secret in env nowhere else.

Locust forwards custom arguments to workers only when a run starts; a plugin (a Timescale
listener) needs them in its `init` handler. The locustfile below records, in each process's
`init`, its role, the custom argument it parsed and a hash of the secret it was given; the
test asserts them after a real run, then greps every file swarm wrote, its output and the
process table for the secret itself.
"""
import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

from swarm.locust import shell, warm_host
from tests.helpers import processes_under, swarm

PROBE = '''
import hashlib, json, os
from locust import HttpUser, constant, events, task
from locust.runners import MasterRunner, WorkerRunner


@events.init_command_line_parser.add_listener
def _args(parser):
    parser.add_argument("--probe-tag", default="unset")


@events.init.add_listener
def _seen(environment, **kw):
    role = ("worker" if isinstance(environment.runner, WorkerRunner)
            else "master" if isinstance(environment.runner, MasterRunner) else "other")
    secret = os.environ.get("PROBE_SECRET", "")
    os.makedirs(os.environ["PROBE_OUT"], exist_ok=True)
    out = os.path.join(os.environ["PROBE_OUT"], f"{role}-{os.getpid()}.json")
    with open(out, "w") as f:
        json.dump({"role": role, "tag": environment.parsed_options.probe_tag,
                   "secret_sha256": hashlib.sha256(secret.encode()).hexdigest() if secret else None,
                   "quoted": os.environ.get("PROBE_QUOTED")}, f)


class U(HttpUser):
    wait_time = constant(0.2)

    @task
    def t(self):
        self.client.get("/assets/jump.wav")
'''
# Quotes, a dollar, a newline: the env file must carry any string as it is.
QUOTED = "it's $HOME \"and\"\nline two"


def _toml_env(probe_out: Path, secret: str) -> str:
    return ('extra_args = ["--probe-tag", "from-master"]\n'
            'worker_args = ["--probe-tag", "from-worker"]\n'
            f'env = {{ PROBE_SECRET = "{secret}", PROBE_OUT = "{probe_out}", '
            f'PROBE_QUOTED = {json.dumps(QUOTED)} }}\n')


def _seen(probe_out: Path) -> list[dict]:
    return sorted((json.loads(p.read_text()) for p in probe_out.glob("*.json")),
                  key=lambda d: d["role"])


def _files_holding(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def _cmdlines_holding(needle: bytes) -> list[str]:
    found = []
    for p in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if needle in p.read_bytes():
                found.append(p.parent.name)
        except OSError:
            pass      # a process that ended meanwhile
    return found


def test_worker_args_and_env_reach_every_locust_secret_nowhere(
        workdir, cli_env, local_toml, target, tmp_path):
    secret = "sw-" + secrets.token_hex(12)
    probe_out = tmp_path / "probe"
    probe_out.mkdir()
    (workdir / "locustfiles" / "env_probe.py").write_text(PROBE)
    local_toml(_toml_env(probe_out, secret))
    state = tmp_path / "state"
    outputs = []
    try:
        for args in (("up", "master"), ("up", "workers", "-n", "2")):
            res = swarm(*args, cwd=workdir, env=cli_env)
            assert res.code == 0, res.err
            outputs.append(res.out + res.err)

        res = swarm("--debug", "run", "-H", target.url, "-f", "env_probe.py", "--headless",
                    "-u", "4", "-r", "4", "-t", "3s", cwd=workdir, env=cli_env, timeout=120)
        assert res.code == 0, res.err
        outputs.append(res.out + res.err)
        seen = _seen(probe_out)
        want = hashlib.sha256(secret.encode()).hexdigest()
        assert [d["role"] for d in seen] == ["master", "worker", "worker"], seen
        assert [d["tag"] for d in seen] == ["from-master", "from-worker", "from-worker"]
        assert all(d["secret_sha256"] == want for d in seen)
        assert all(d["quoted"] == QUOTED for d in seen)
        assert list(state.rglob(shell.ENV_FILE)) == []      # removed once Locust read it
        record = json.loads(next((workdir / "results" / "t").glob("*/run.json")).read_text())
        assert record["worker_args"] == ["--probe-tag", "from-worker"]
        assert record["env_names"] == ["PROBE_OUT", "PROBE_QUOTED", "PROBE_SECRET"]

        # While Locust runs: the secret is in no process's command line (what `ps` shows).
        for p in probe_out.iterdir():
            p.unlink()
        res = swarm("run", "-H", target.url, "-f", "env_probe.py", "-u", "2", cwd=workdir,
                    env=cli_env)
        assert res.code == 0, res.err
        outputs.append(res.out + res.err)
        assert any("locust" in p for p in processes_under(state))
        assert _cmdlines_holding(secret.encode()) == []
        assert len(_seen(probe_out)) == 3
        assert list(state.rglob(shell.ENV_FILE)) == []
        res = swarm("logs", cwd=workdir, env=cli_env)
        outputs.append(res.out + res.err)
        res = swarm("killall", cwd=workdir, env=cli_env)
        assert res.code == 0, res.err
        outputs.append(res.out + res.err)
    finally:
        res = swarm("down", cwd=workdir, env=cli_env)
        outputs.append(res.out + res.err)
    assert res.code == 0, res.err
    assert all(secret not in o for o in outputs)
    # results/ (run.json, logs/, CSVs), the state dir, swarm.toml aside: nothing holds it
    holding = _files_holding(tmp_path, secret.encode())
    assert holding == [workdir / "swarm.toml"], holding


def test_the_env_file_carries_any_string(tmp_path):
    """What start_cmd writes, a shell sources and the warm Locust reads, value for value."""
    env = {"A": QUOTED, "B": "", "C": "x=y 'z'", "D": "\\back\\slash"}
    (tmp_path / shell.ENV_FILE).write_bytes(shell.env_file(env))
    names = " ".join(env)
    dump = f". ./{shell.ENV_FILE}; for n in {names}; do eval \"printf '%s\\0' \\\"\\${{$n}}\\\"\"; done"
    got = subprocess.run(["sh", "-c", dump], cwd=tmp_path, capture_output=True, check=True)
    assert got.stdout.split(b"\0")[:-1] == [v.encode() for v in env.values()]
    code = (f"import os, sys; sys.path.insert(0, {str(Path(warm_host.__file__).parent)!r}); "
            "import warm_host; warm_host._load_env(); "
            f"print(repr([os.environ[n] for n in {list(env)!r}]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         check=True, env={"PATH": "/usr/bin:/bin"}).stdout
    assert out.strip() == repr(list(env.values()))
    cmd = shell.start_cmd("swarm", ["-f", "x"], warm=True, env=True)
    assert subprocess.run(["sh", "-n", "-c", cmd]).returncode == 0


def _environ_holds(pid: int, needle: bytes) -> bool:
    try:
        return needle in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False


def test_on_hosts_both_warm_and_cold_starts_get_them(workdir, cli_env, emulated_hosts,
                                                     bridge_target):
    """Over SSH, where Locust is forked by each host's warm Locust (and started cold when that
    one is gone): each path hands the Locust it starts the arguments and the environment, and
    the warm Locust that stays never holds the secret."""
    from tests.reliability import locust_pids, poll
    from tests.test_ssh_cycle import _cmdline, hosts_toml, warm_pids

    secret = "sw-" + secrets.token_hex(12)
    hs = emulated_hosts(3)
    master, *workers = hs.hosts
    (workdir / "locustfiles" / "env_probe.py").write_text(PROBE)
    # relative: each host writes into its own remote dir
    hosts_toml(workdir, master, workers, hs.key_path, extra=_toml_env(Path("probe"), secret))
    want = hashlib.sha256(secret.encode()).hexdigest()
    outputs = []

    def run(*extra: str) -> None:
        res = swarm("run", "-H", bridge_target.url, "-f", "env_probe.py", *extra, cwd=workdir,
                    env=cli_env, timeout=180)
        outputs.append(res.out + res.err)
        assert res.code == 0, res.err
        assert "2 of 2 worker process(es) connected" in res.err

    def seen(host) -> list[dict]:
        got = _seen(host.home / "swarm" / "probe")
        for p in (host.home / "swarm" / "probe").iterdir():
            p.unlink()
        return got

    try:
        for args in (("up", "master"), ("up", "workers", "-n", "2")):
            res = swarm(*args, cwd=workdir, env=cli_env, timeout=120)
            outputs.append(res.out + res.err)
            assert res.code == 0, res.err
        run("--headless", "-u", "4", "-r", "4", "-t", "3s")      # every host: warm
        for host, role, tag in ((master, "master", "from-master"),
                                *((w, "worker", "from-worker") for w in workers)):
            got = seen(host)
            assert [(d["role"], d["tag"], d["secret_sha256"], d["quoted"]) for d in got] == [
                (role, tag, want, QUOTED)], (host.ip, got)

        # worker 1's warm Locust gone: it starts cold; a UI run keeps Locust up to look at
        dead = warm_pids(workers[0])[0]
        os.kill(dead, signal.SIGKILL)
        poll(lambda: dead not in warm_pids(workers[0]), timeout=10, what="the warm Locust to die")
        run("-u", "2")
        cold = locust_pids(workers[0])
        assert len(cold) == 1 and "swarm-warm.py" not in _cmdline(cold[0]), cold
        assert [(d["tag"], d["secret_sha256"]) for d in seen(workers[0])] == [
            ("from-worker", want)]
        assert [(d["tag"], d["secret_sha256"]) for d in seen(workers[1])] == [
            ("from-worker", want)]
        # the check below can see it: the cold Locust was exec'd with it in its environment
        assert _environ_holds(cold[0], secret.encode())
        poll(lambda: len(warm_pids(workers[0])) == 1, timeout=30, what="a new warm Locust")
        for h in hs.hosts:
            assert list((h.home / "swarm").glob(shell.ENV_FILE)) == [], h.ip
            assert [p for p in h.pids() if secret.encode() in _cmdline(p).encode()] == []
            assert [p for p in warm_pids(h) if _environ_holds(p, secret.encode())] == [], h.ip
        res = swarm("logs", cwd=workdir, env=cli_env)
        outputs.append(res.out + res.err)
        res = swarm("killall", cwd=workdir, env=cli_env)
        outputs.append(res.out + res.err)
        assert res.code == 0, res.err
        for h in hs.hosts:   # what the hosts keep until `down`: logs, results, swarm's files
            assert _files_holding(h.home / "swarm", secret.encode()) == [], h.ip
    finally:
        res = swarm("down", cwd=workdir, env=cli_env, timeout=120)
        outputs.append(res.out + res.err)
    assert res.code == 0, res.err
    assert all(secret not in o for o in outputs)
    assert _files_holding(workdir.parent, secret.encode()) == [workdir / "swarm.toml"]
