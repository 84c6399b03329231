"""`swarm demo`: the whole cycle on this machine against a built-in target, then clean up."""
from __future__ import annotations

import os
import socket
from pathlib import Path

from swarm import config, core, render, runs, target
from swarm.errors import SwarmError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def demo_files_dir() -> Path:
    """./locustfiles in a checkout, else the copy next to the package source."""
    here = Path("locustfiles")
    if (here / "viral_load.py").is_file():
        return here.resolve()
    return Path(__file__).resolve().parent.parent / "locustfiles"


def _demo_stack_name() -> str:
    """'demo', unless another demo is using it right now."""
    from swarm import paths
    busy = (paths.stack_dir("local", "demo") / "nodes.json").exists()
    return f"demo-{os.getpid()}" if busy else "demo"


def demo_config(files_dir: Path) -> config.Config:
    web, master = _free_port(), _free_port()
    while master == web:
        master = _free_port()
    text = (f'[stack]\nname = "{_demo_stack_name()}"\nprovider = "local"\n'
            f'[locust]\nfiles_dir = "{files_dir.as_posix()}"\nweb_port = {web}\nmaster_port = {master}\n')
    return config.parse(text, None, Path.cwd())


def run_demo(run_time: str = "15s") -> int:
    files = demo_files_dir()
    if not (files / "viral_load.py").is_file():
        raise SwarmError(f"demo locustfiles not found at {files}: run `swarm demo` from the "
                         "swarm checkout")
    report = render.ConsoleReporter()
    cfg = demo_config(files)
    sess = core.Session.open(cfg, report)
    with target.start("127.0.0.1", 0) as srv:
        report.info(f"demo target (a small Kandu-like API) listening on {srv.url}")
        try:
            core.up_master(sess)
            core.scale_workers(sess, 2)
            render.out.print(render.nodes_table(f"stack {sess.stack.name} (local)",
                                                render.node_rows(sess.nodes())))
            opts = runs.RunOptions(host=srv.url, locustfile="viral_load.py", users=20,
                                   spawn_rate=10, run_time=run_time, headless=True)
            outcome = runs.run(sess, opts)
        finally:
            core.down(sess)
            report.info(f"stack {sess.stack.name} is down: no process left")
        render.out.print(render.summary_table(outcome.summary))
        served = srv.total()
    total = outcome.summary.total
    render.err.print(f"results: {outcome.results_dir}")
    render.err.print(f"the target served {served} requests; Locust counted {total.requests} "
                     f"with {total.failures} failures across {outcome.workers_expected} workers")
    return 0 if total.requests > 0 and total.failures == 0 else 1
