"""Helpers shared by the reliability and security suites (bad input, faults, two stacks,
exposure, concurrency): a swarm.toml for an EC2 stack in the lab subnet, what moto holds for a
stack, and bounded polling. Everything here observes; nothing here drives swarm in-process."""
from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from tests.helpers import SWARM

# A bootstrap that does what the real one does on an emulated host (the controller's Locust is
# on the host's PATH already) without its checks, so a stack is up in about a second. Workers
# sleep SWARM_TEST_WORKER_SLEEP seconds first when the file `slow-bootstrap` is in bootstrap/.
FAST_BOOTSTRAP = """#!/usr/bin/env bash
set -eu
cd "$(dirname "$0")"
if [ -f slow-bootstrap ] && [ "${SWARM_ROLE:-}" = worker ]; then sleep "$(cat slow-bootstrap)"; fi
echo "bootstrap done role=${SWARM_ROLE:-} stack=${SWARM_STACK:-}"
"""


def ec2_toml(workdir: Path, subnet_id: str | None, name: str = "rel", extra: str = "",
             ec2_extra: str = "", file: str = "swarm.toml", *, ami: str = "al2023",
             user: str | None = "root", processes: int | None = 1) -> Path:
    """An EC2 stack in the lab subnet, reached on private IPs as root (the emulated hosts);
    `subnet_id` None: the default VPC's (EmulatedEC2.make_subnets puts it in the lab).
    `user` / `processes` None: swarm's defaults (the AMI's user, one process per core)."""
    p = workdir / file
    subnet = f'subnet_id = "{subnet_id}"\n' if subnet_id else ""
    ssh_user = f'ssh_user = "{user}"\n' if user else ""
    procs = f"processes = {processes}\n" if processes is not None else ""
    p.write_text(f'[stack]\nname = "{name}"\nprovider = "ec2"\n'
                 f'[ec2]\nregion = "us-east-1"\nami = "{ami}"\n{subnet}'
                 f'ssh_cidr = "10.77.0.0/16"\nconnect = "private"\n{ssh_user}{ec2_extra}'
                 f'[locust]\n{procs}[bootstrap]\nssh_timeout = 10\n{extra}')
    return p


def ec2_stack(workdir: Path, cli_env: dict[str, str], ec2_env: Any, name: str) -> dict[str, str]:
    """An EC2 stack config in the lab subnet with the fast bootstrap; returns the CLI env."""
    ec2_toml(workdir, ec2_env.subnet_id, name=name)
    fast_bootstrap(workdir)
    return {**cli_env, **ec2_env.env}


def fast_bootstrap(workdir: Path, worker_sleep: float = 0) -> None:
    script = workdir / "bootstrap" / "bootstrap.sh"
    script.write_text(FAST_BOOTSTRAP)
    slow = workdir / "bootstrap" / "slow-bootstrap"
    if worker_sleep:
        slow.write_text(f"{worker_sleep:g}\n")
    else:
        slow.unlink(missing_ok=True)


def instances(ec2, stack: str | None = None, role: str | None = None,
              live: bool = True) -> list[dict[str, Any]]:
    """Instances moto holds (optionally of one stack / role); live = not shutting down."""
    filters = []
    if stack is not None:
        filters.append({"Name": "tag:swarm:stack", "Values": [stack]})
    if role is not None:
        filters.append({"Name": "tag:swarm:role", "Values": [role]})
    if live:
        filters.append({"Name": "instance-state-name", "Values": ["pending", "running"]})
    resp = ec2.describe_instances(Filters=filters) if filters else ec2.describe_instances()
    return [i for r in resp["Reservations"] for i in r["Instances"]]


def all_instances(ec2) -> list[dict[str, Any]]:
    """Every instance moto ever launched since the last reset, in any state."""
    return instances(ec2, live=False)


def security_groups(ec2, stack: str) -> list[dict[str, Any]]:
    return ec2.describe_security_groups(
        Filters=[{"Name": "tag:swarm:stack", "Values": [stack]}])["SecurityGroups"]


def key_pairs(ec2, stack: str) -> list[dict[str, Any]]:
    return ec2.describe_key_pairs(
        Filters=[{"Name": "tag:swarm:stack", "Values": [stack]}])["KeyPairs"]


def poll(check: Callable[[], Any], *, timeout: float, interval: float = 0.1,
         what: str = "condition") -> Any:
    """check() until truthy; bounded in time and in count."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / interval) + 2):
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            break
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def locust_pids(host) -> list[int]:
    """PIDs of Locust processes on an emulated host, started cold (the `locust` script) or
    forked by the host's warm Locust (which names them "locust"): not the shells around them,
    not the warm one (named "swarm-warm")."""
    out = []
    for pid in host.pids():
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "locust":
                out.append(pid)
        except OSError:
            continue
    return out


def start(args, workdir, env, tmp_path) -> tuple[subprocess.Popen, Path, Path]:
    """The CLI in the background, output to files (never a full pipe), in its own session."""
    tag = uuid.uuid4().hex[:6]
    out, err = tmp_path / f"out-{tag}", tmp_path / f"err-{tag}"
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen([*SWARM, *args], cwd=workdir, env=env, stdout=o, stderr=e,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    return proc, out, err


def finish(proc: subprocess.Popen, timeout: float) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        raise AssertionError(f"the CLI did not end within {timeout}s")
