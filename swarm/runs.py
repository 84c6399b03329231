"""Running Locust on a stack: validate, sync, kill, start, wait, fetch, judge.

Every step is the same on every provider; only the Runner behind each node differs.
"""
from __future__ import annotations

import ast
import os
import shlex
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from swarm import locust as L
from swarm.checks import Check, checks_from_table, parse_check
from swarm.core import Session
from swarm.errors import LocustError, RemoteError, UsageError
from swarm.live import expected_by_node, master_stats, write_meta_cmd
from swarm.models import MASTER, WORKER, HostResult, Node
from swarm.remote import Result, fan_out, replace_tree_cmd, tar_bytes

WORKERS_TIMEOUT = 60      # seconds for every worker to connect to the master
POLL_S = 1.0


@dataclass(frozen=True)
class RunOptions:
    host: str
    locustfile: str
    users: int | None = None
    spawn_rate: float | None = None
    run_time: str | None = None
    headless: bool = False
    profile: str | None = None
    checks: tuple[str, ...] = ()
    extra_args: tuple[str, ...] = ()
    require_all: bool = False


@dataclass
class Plan:
    """A validated run: what to ship, what to start, what to judge."""
    files_dir: Path
    spec: L.RunSpec
    checks: list[Check]
    profile: str | None


@dataclass
class RunOutcome:
    results_dir: Path | None = None
    summary: L.Summary | None = None
    exit_code: int = 0
    checks: list[dict[str, Any]] = field(default_factory=list)
    workers_expected: int = 0
    workers_seen: int = 0
    skipped: list[HostResult] = field(default_factory=list)
    saturated: dict[str, float] = field(default_factory=dict)   # node (or worker id) -> peak CPU %
    cpu_peaks: dict[str, float] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)            # workers that dropped out
    hostnames: dict[str, str] = field(default_factory=dict)
    processes: dict[str, int] = field(default_factory=dict)     # node name -> worker processes
    record: dict[str, Any] = field(default_factory=dict)


# ---- validation: everything checked before anything starts ----

def check_host_url(url: str) -> str:
    p = urlparse(url)
    if p.scheme not in ("http", "https") or not p.hostname or " " in url:
        raise UsageError(f"bad -H {url!r}: give the target's base URL, e.g. https://staging.example.com")
    return url.rstrip("/")


def resolve_locustfile(files_dir: Path, name: str) -> tuple[Path, str]:
    """-f names a file in files_dir, or a path; returns (dir to ship, path inside it)."""
    candidates = [files_dir / name, Path(name)]
    path = next((c for c in candidates if c.is_file()), None)
    if path is None:
        # Something by that name that is no file (a directory, a FIFO: never opened, it would
        # block) or a symlink to nothing: say which, not "not found".
        odd = next((c for c in candidates if c.is_symlink() or c.exists()), None)
        if odd is not None and not odd.exists():
            raise UsageError(f"locustfile {odd} is a broken symlink (to {os.readlink(odd)})")
        if odd is not None:
            kind = "a directory" if odd.is_dir() else "a FIFO" if odd.is_fifo() else "a special file"
            raise UsageError(f"locustfile {odd} is not a regular file ({kind})")
        raise UsageError(f"locustfile {name!r} not found (looked in {files_dir}/ and ./)")
    path = path.resolve()
    try:
        rel = path.relative_to(files_dir.resolve())
        ship = files_dir.resolve()
    except ValueError:
        rel, ship = Path(path.name), path.parent
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"locustfile {path} cannot be read: {e}") from None
    if not source.strip():
        raise UsageError(f"locustfile {path} is empty")
    try:
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as e:
        raise UsageError(f"locustfile {path}:{e.lineno}: syntax error: {e.msg}") from None
    if not _defines_user(tree):
        raise UsageError(f"locustfile {path} defines no User class (e.g. class Visitor(HttpUser))")
    return ship, rel.as_posix()


def _defines_user(tree: ast.Module) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for base in node.bases:
                name = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")
                if name.endswith("User"):
                    return True
    return False


def plan_run(sess: Session, opts: RunOptions) -> Plan:
    cfg = sess.stack.config
    host = check_host_url(opts.host)
    prof = None
    if opts.profile:
        if opts.profile not in cfg.profiles:
            known = ", ".join(sorted(cfg.profiles)) or "none defined"
            raise UsageError(f"unknown profile {opts.profile!r} (profiles in swarm.toml: {known})")
        prof = cfg.profiles[opts.profile]
    users = opts.users if opts.users is not None else (prof and prof.users) or 10
    rate = opts.spawn_rate if opts.spawn_rate is not None else (prof and prof.spawn_rate) or users
    run_time = opts.run_time or (prof and prof.run_time) or None
    if users < 1:
        raise UsageError(f"-u must be at least 1, got {users}")
    if rate <= 0:
        raise UsageError(f"-r must be positive, got {rate}")
    if run_time is not None:
        try:
            L.parse_duration(run_time)
        except ValueError as e:
            raise UsageError(f"-t: {e}") from None
    if opts.headless and run_time is None:
        raise UsageError("headless runs need a run time: -t 5m (or a --profile with run_time)")
    checks = [parse_check(c) for c in opts.checks] or checks_from_table(cfg.checks)
    ship, rel = resolve_locustfile(cfg.resolve(cfg.locust.files_dir), opts.locustfile)
    spec = L.RunSpec(locustfile=rel, host=host, users=int(users), spawn_rate=float(rate),
                     run_time=run_time, headless=opts.headless, expect_workers=0,
                     master_port=cfg.locust.master_port, web_port=cfg.locust.web_port,
                     extra_args=tuple(cfg.locust.extra_args) + tuple(opts.extra_args))
    return Plan(ship, spec, checks, opts.profile)


def stack_nodes(sess: Session) -> tuple[Node, list[Node]]:
    nodes = sess.nodes()
    masters = [n for n in nodes if n.role == MASTER]
    workers = [n for n in nodes if n.role == WORKER]
    if not masters:
        raise UsageError(f"stack {sess.stack.name!r} has no master: run `swarm up master` first")
    if not workers:
        raise UsageError(f"stack {sess.stack.name!r} has no workers: run `swarm up workers -n 2`")
    return masters[0], workers


def processes_per_worker(sess: Session) -> int:
    cfg = sess.stack.config
    return cfg.local.workers_processes if sess.stack.provider == "local" else cfg.locust.processes


# ---- the run ----

def run(sess: Session, opts: RunOptions, results_root: Path = Path("results")) -> RunOutcome:
    plan = plan_run(sess, opts)
    master, workers = stack_nodes(sess)
    runners = {n.id: sess.provider.runner(sess.stack, n) for n in [master, *workers]}
    try:
        return _run(sess, opts, plan, master, workers, runners, results_root)
    finally:
        for r in runners.values():
            r.close()


def _run(sess, opts, plan, master, workers, runners, results_root) -> RunOutcome:
    rd = sess.stack.config.bootstrap.remote_dir
    started_at = datetime.now(timezone.utc)

    # 1. ship the files and stop whatever runs, in one round trip per host
    payload = tar_bytes(plan.files_dir)
    sync = f"{replace_tree_cmd(f'{rd}/locustfiles')} && {L.kill_cmd(rd)} && hostname"
    sess.report.info(f"syncing {plan.files_dir.name}/ and stopping old Locust on "
                     f"{1 + len(workers)} node(s)")
    synced = fan_out([master, *workers], lambda n: runners[n.id].run(sync, timeout=120, stdin=payload),
                     what="sync", raise_on_error=False)
    outcome = RunOutcome()
    if not synced[0].ok:
        raise RemoteError(f"master unreachable, nothing started: {synced[0].error}", synced)
    outcome.skipped = [r for r in synced[1:] if not r.ok]
    if outcome.skipped:
        names = ", ".join(f"{r.node.name} ({r.error})" for r in outcome.skipped)
        if opts.require_all or len(outcome.skipped) == len(workers):
            raise RemoteError(f"workers unreachable, nothing started: {names}", synced)
        sess.report.warn(f"skipping unreachable worker(s): {names}")
    live = [r.node for r in synced[1:] if r.ok]
    nprocs = {r.node.id: _nproc(r.value) for r in synced[1:] if r.ok}
    hostnames = {r.node.name: _hostname(r.value) for r in synced[1:] if r.ok}

    # 2. start master and workers together: workers retry until the master listens
    per = processes_per_worker(sess)
    by_node = expected_by_node(live, nprocs, per)
    expected = sum(by_node.values())
    spec = _with_expected(plan.spec, expected)
    master_ip = master.private_ip or "127.0.0.1"
    meta = {"expected": expected, "processes": by_node, "hostnames": hostnames,
            "locustfile": spec.locustfile, "host": spec.host,
            "started_at": started_at.isoformat(timespec="seconds")}
    outcome.hostnames, outcome.processes = hostnames, by_node
    # Hosts swarm bootstraps keep a warm (pre-imported) Locust; on `local` it would be one
    # more long-lived process on the user's machine for no gain.
    warm = sess.provider.runs_bootstrap

    def start(node: Node) -> str:
        if node.role == MASTER:
            # Written first, so `swarm status` knows what to expect from the first poll on.
            cmd = (f"mkdir -p {shlex.quote(rd)} && (cd {shlex.quote(rd)} && {write_meta_cmd(meta)}) && "
                   + L.start_cmd(rd, L.master_argv(spec), fresh_results=True, warm=warm))
        else:
            argv = L.worker_argv(spec.locustfile, master_ip, spec.master_port, per)
            cmd = L.start_cmd(rd, argv, warm=warm)
        return runners[node.id].run(cmd, timeout=60).stdout.strip()

    sess.report.info(f"starting Locust: master on {master.name}, {expected} worker process(es) "
                     f"on {len(live)} node(s)")
    fan_out([master, *live], start, what="start")
    outcome.workers_expected = expected
    stats = wait_for_workers(runners[master.id], rd, spec.web_port, expected)
    outcome.workers_seen = int(stats.get("worker_count", 0))
    sess.report.info(f"{outcome.workers_seen} of {expected} worker process(es) connected")
    if not opts.headless:
        return outcome

    # 3. headless: follow the run, then bring everything back, even after a failure
    from swarm.results import finish_headless
    return finish_headless(sess, plan, opts, master, live, runners, outcome, started_at, results_root)


def _nproc(output: Result) -> int:
    """The sync step prints nproc then hostname."""
    try:
        return max(1, int(output.stdout.strip().splitlines()[-2]))
    except (ValueError, IndexError, AttributeError):
        return 1


def _hostname(output: Result) -> str:
    try:
        return output.stdout.strip().splitlines()[-1].strip()
    except (IndexError, AttributeError):
        return ""


def _with_expected(spec: L.RunSpec, n: int) -> L.RunSpec:
    from dataclasses import replace
    return replace(spec, expect_workers=max(1, n))


def wait_for_workers(runner, rd: str, web_port: int, expected: int,
                     timeout: float = WORKERS_TIMEOUT) -> dict[str, Any]:
    """Until every worker process is connected: one exec, waiting on the master itself."""
    last = master_stats(runner, rd, web_port, wait=L.wait_workers_cmd(rd, web_port, expected, timeout),
                        wait_s=timeout)
    # The API's figure may be up to 2 s old (Locust caches it); the loop's count is not.
    last["worker_count"] = max(int(last.get("worker_count", 0)), last.get("_counted") or 0)
    if last["worker_count"] >= expected:
        return last
    if not last.get("_running"):
        log = runner.run(f"tail -n 5 {shlex.quote(rd)}/locust.log", timeout=20, check=False)
        raise LocustError(f"the Locust master exited before the workers connected: "
                          f"{log.stdout.strip().splitlines()[-1:] or 'no log'}")
    raise LocustError(f"only {last.get('worker_count', 0)} of {expected} worker process(es) "
                      f"connected within {timeout:.0f}s: see `swarm logs`")


def killall(sess: Session) -> list[HostResult]:
    nodes = sess.nodes()
    if not nodes:
        raise UsageError(f"stack {sess.stack.name!r} has no nodes")
    rd = sess.stack.config.bootstrap.remote_dir

    def kill(node: Node):
        r = sess.provider.runner(sess.stack, node)
        try:
            return r.run(L.kill_cmd(rd), timeout=60)
        finally:
            r.close()

    return fan_out(nodes, kill, what="killall")
