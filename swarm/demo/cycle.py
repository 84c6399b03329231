"""`swarm demo`: the whole cycle on this machine against the built-in target, then clean up."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from swarm import config, paths
from swarm.demo import target
from swarm.errors import SwarmError
from swarm.models import Node
from swarm.pipeline import fleet
from swarm.pipeline.plan import RunOptions
from swarm.pipeline.run import RunOutcome, run
from swarm.pipeline.session import Reporter, Session


@dataclass(frozen=True)
class DemoOutcome:
    stack: str
    nodes: list[Node]  # the stack while it ran
    run: RunOutcome
    served: int  # requests the target answered


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def demo_files_dir() -> Path:
    """./locustfiles where it has the demo's file, else the copy shipped in the package."""
    here = Path("locustfiles")
    if (here / "viral_load.py").is_file():
        return here.resolve()
    return paths.scaffold_dir() / "locustfiles"


def _demo_stack_name() -> str:
    """'demo', unless another demo is using it right now."""
    busy = (paths.stack_dir("local", "demo") / "nodes.json").exists()
    return f"demo-{os.getpid()}" if busy else "demo"


def demo_config(files_dir: Path) -> config.Config:
    web, master = _free_port(), _free_port()
    while master == web:
        master = _free_port()
    text = (
        f'[stack]\nname = "{_demo_stack_name()}"\nprovider = "local"\n'
        f'[locust]\nfiles_dir = "{files_dir.as_posix()}"\n'
        f"web_port = {web}\nmaster_port = {master}\n"
    )
    return config.parse(text, None, Path.cwd())


def run_demo(report: Reporter, run_time: str = "15s") -> DemoOutcome:
    files = demo_files_dir()
    if not (files / "viral_load.py").is_file():
        raise SwarmError(
            f"demo locustfiles not found at {files}: run `swarm demo` from the swarm checkout"
        )
    sess = Session.open(demo_config(files), report)
    with target.start("127.0.0.1", 0) as srv:
        report.info(f"demo target (a small Kandu-like API) listening on {srv.url}")
        try:
            fleet.up_master(sess)
            fleet.scale_workers(sess, 2)
            nodes = sess.nodes()
            opts = RunOptions(
                host=srv.url,
                locustfile="viral_load.py",
                users=20,
                spawn_rate=10,
                run_time=run_time,
                headless=True,
            )
            outcome = run(sess, opts)
        finally:
            fleet.down(sess)
            report.info(f"stack {sess.stack.name} is down: no process left")
        return DemoOutcome(sess.stack.name, nodes, outcome, srv.total())
