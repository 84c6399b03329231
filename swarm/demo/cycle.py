"""`swarm demo`: the whole cycle on this machine against the built-in target, then clean up.

`swarm demo --ws` runs the seed WebSocket scenario instead: ws_chat.py with the light
profile of the packaged swarm.toml.example, against the target's chat rooms."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field, replace
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
    served: int  # HTTP requests the target answered
    counts: dict[str, int] = field(default_factory=dict)  # all it counted, WebSocket too


HTTP_LOCUSTFILE = "viral_load.py"
WS_LOCUSTFILE = "ws_chat.py"
WS_PROFILE = "light"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def demo_files_dir() -> Path:
    """./locustfiles where it has the demo's file, else the copy shipped in the package."""
    here = Path("locustfiles")
    if (here / HTTP_LOCUSTFILE).is_file() and (here / WS_LOCUSTFILE).is_file():
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


def _options(url: str, run_time: str | None, ws: bool) -> RunOptions:
    if ws:  # users, spawn rate, run time and checks from the profile (-t still wins)
        return RunOptions(
            host=url, locustfile=WS_LOCUSTFILE, run_time=run_time, headless=True, profile=WS_PROFILE
        )
    return RunOptions(
        host=url,
        locustfile=HTTP_LOCUSTFILE,
        users=20,
        spawn_rate=10,
        run_time=run_time or "15s",
        headless=True,
    )


def run_demo(report: Reporter, run_time: str | None = None, ws: bool = False) -> DemoOutcome:
    files = demo_files_dir()
    locustfile = WS_LOCUSTFILE if ws else HTTP_LOCUSTFILE
    if not (files / locustfile).is_file():
        raise SwarmError(
            f"demo locustfiles not found at {files}: run `swarm demo` from the swarm checkout"
        )
    cfg = demo_config(files)
    if ws:
        example = config.parse(config.example_path().read_text(), config.example_path())
        cfg = replace(cfg, profiles={WS_PROFILE: example.profiles[WS_PROFILE]})
    sess = Session.open(cfg, report)
    with target.start("127.0.0.1", 0) as srv:
        what = "chat rooms at /ws/room/NAME" if ws else "a small Kandu-like API"
        report.info(f"demo target ({what}) listening on {srv.url}")
        try:
            fleet.up_master(sess)
            fleet.scale_workers(sess, 2)
            nodes = sess.nodes()
            outcome = run(sess, _options(srv.url, run_time, ws))
        finally:
            fleet.down(sess)
            report.info(f"stack {sess.stack.name} is down: no process left")
        return DemoOutcome(sess.stack.name, nodes, outcome, srv.total(), srv.counts())
