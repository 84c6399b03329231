"""The AWS secret key and session token never leave the controller (issue 15, item 7).

They are in the environment of every `swarm` command (distinctive fake values moto accepts).
While a headless run's load is on, the environment and command line of every process on every
emulated host (Host.pids(): sshd's sessions, the warm Locust, Locust and its forks, shells)
are read again and again; after the cycle, every file swarm wrote: the controller's results,
state and logs, everything under each host's home (the remote dir, bootstrap and Locust logs,
the stats). Neither value may appear anywhere. tests/test_exposure.py checks the same after
`killall` and in the output of an error under --debug."""
from __future__ import annotations

import time
import uuid
from pathlib import Path

from tests.helpers import swarm
from tests.reliability import ec2_toml, finish, locust_pids, poll, start

STACK = "secrets"
SAMPLE_EVERY_S = 0.2


def read(path: Path) -> str:
    try:
        return path.read_bytes().replace(b"\0", b"\n").decode(errors="replace")
    except OSError:   # the process ended between listing and reading: nothing to leak
        return ""


def files_under(root: Path) -> list[Path]:
    if not root.exists():
        return []
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]


def test_no_secret_on_any_host_while_the_load_runs_nor_in_any_file(
        workdir, cli_env, ec2_env, emulated_ec2, bridge_target, tmp_path):
    secret = f"SwArMsEcReT{uuid.uuid4().hex}"
    token = f"SwArMtOkEn{uuid.uuid4().hex}"
    env = {**cli_env, **ec2_env.env, "AWS_SECRET_ACCESS_KEY": secret, "AWS_SESSION_TOKEN": token}
    ec2_toml(workdir, ec2_env.subnet_id, name=STACK)       # the real bootstrap/bootstrap.sh
    outputs: list[str] = []

    def cli(*args: str, timeout: float = 180) -> None:
        res = swarm(*args, cwd=workdir, env=env, timeout=timeout)
        outputs.extend([res.out, res.err])
        assert res.code == 0, (args, res.err)

    cli("up", "master")
    cli("up", "workers", "-n", "2")
    hosts = list(emulated_ec2.hosts.values())
    assert len(hosts) == 3

    # -- while the load runs: every process on every host, sampled until the run ends
    proc, out, err = start(["run", "-H", bridge_target.url, "-f", "signups.py", "--headless",
                            "-u", "4", "-r", "4", "-t", "8s"], workdir, env, tmp_path)
    seen: dict[str, str] = {}            # "<host> pid <pid> environ|cmdline" -> text
    locust_seen: set[str] = set()        # hosts whose Locust was read while it ran
    try:
        poll(lambda: "worker process(es) connected" in err.read_text() or proc.poll() is not None,
             timeout=120, what="the workers to connect")
        deadline = time.monotonic() + 60   # the run is 8 s; bounded on a busy machine
        for _ in range(int(60 / SAMPLE_EVERY_S)):
            if proc.poll() is not None or time.monotonic() > deadline:
                break
            for host in hosts:
                running = set(locust_pids(host))
                for pid in host.pids():
                    for what in ("environ", "cmdline"):
                        text = read(Path(f"/proc/{pid}/{what}"))
                        if text:
                            seen[f"{host.name} pid {pid} {what}"] = text
                    if pid in running and seen.get(f"{host.name} pid {pid} environ"):
                        locust_seen.add(host.name)
            time.sleep(SAMPLE_EVERY_S)
        code = finish(proc, timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    outputs.extend([out.read_text(), err.read_text()])
    assert code == 0, err.read_text()
    # the samples are of the load itself: each host's running Locust, its environment read
    assert locust_seen == {h.name for h in hosts}, (locust_seen, sorted(seen)[:20])
    assert any("SWARM_" in v or "PATH=" in v for k, v in seen.items() if k.endswith("environ"))

    # -- after the cycle: the logs fetched, Locust stopped; every file swarm wrote
    cli("logs", "all")
    cli("logs", "--bootstrap", "all")
    cli("killall")
    texts = {f"process {k}": v for k, v in seen.items()}
    texts["cli output"] = "\n".join(outputs)
    for p in files_under(tmp_path):                  # workdir (results), state dir, CLI logs
        texts[str(p)] = read(p)
    for host in hosts:
        for p in files_under(host.home):
            texts[f"{host.name}:{p}"] = read(p)
    assert any(k.endswith("bootstrap.log") for k in texts)
    assert sum(k.endswith("locust.log") for k in texts) >= 3, sorted(texts)
    leaks = sorted(k for k, v in texts.items() if secret in v or token in v)
    assert leaks == []
    cli("down")
