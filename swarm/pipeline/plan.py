"""Plan a run: everything checked on this machine before anything is shipped or started."""

from __future__ import annotations

import ast
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from swarm.config.schema import ENV_NAME_RE, ChecksSection, Profile
from swarm.errors import UsageError
from swarm.locust.argv import RunSpec, parse_duration
from swarm.models import Node, Role
from swarm.pipeline import baseline as baselines
from swarm.pipeline.judge import Check, checks_from_table, parse_check
from swarm.pipeline.session import OTEL_EXTRA, Session, missing_for_extra

OTEL_PREFIX = "OTEL_"  # the OpenTelemetry SDK's variables: endpoint, protocol, headers, ...


@dataclass(frozen=True)
class RunOptions:
    """What `swarm run` was asked for, as typed."""

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
    baseline: str | None = None  # prev, last, or a run (--baseline)
    baseline_anyway: bool = False


@dataclass(frozen=True)
class Plan:
    """A validated run: what to ship, what to start, what to judge."""

    files_dir: Path
    spec: RunSpec
    checks: list[Check]
    profile: str | None
    require_all: bool = False
    baseline: baselines.Baseline | None = None

    @property
    def run_s(self) -> int | None:
        return parse_duration(self.spec.run_time) if self.spec.run_time else None


def check_host_url(url: str) -> str:
    p = urlparse(url)
    if p.scheme not in ("http", "https") or not p.hostname or " " in url:
        raise UsageError(
            f"bad -H {url!r}: give the target's base URL, e.g. https://staging.example.com"
        )
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
            kind = (
                "a directory" if odd.is_dir() else "a FIFO" if odd.is_fifo() else "a special file"
            )
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


def plan_run(sess: Session, opts: RunOptions, results_root: Path = Path("results")) -> Plan:
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
            parse_duration(run_time)
        except ValueError as e:
            raise UsageError(f"-t: {e}") from None
    if opts.headless and run_time is None:
        raise UsageError("headless runs need a run time: -t 5m (or a --profile with run_time)")
    checks = (
        [parse_check(c) for c in opts.checks]
        or profile_checks(prof)
        or checks_from_table(cfg.checks)
    )
    baseline = plan_baseline(sess, opts, checks, results_root)
    ship, rel = resolve_locustfile(cfg.resolve(cfg.locust.files_dir), opts.locustfile)
    env = locust_env(sess, prof)
    ports = sess.ports
    spec = RunSpec(
        locustfile=rel,
        host=host,
        users=int(users),
        spawn_rate=float(rate),
        run_time=run_time,
        headless=opts.headless,
        expect_workers=0,
        master_port=ports.port,
        web_port=ports.web,
        extra_args=tuple(cfg.locust.extra_args) + tuple(opts.extra_args),
        master_bind=ports.bind,
        worker_args=tuple(cfg.locust.worker_args),
        env=env,
        otel=cfg.locust.otel,
    )
    if baseline is not None:
        baseline.check(baselines.this_run(spec, ship, 0, None), baselines.PLANNED)
    return Plan(ship, spec, checks, opts.profile, opts.require_all, baseline)


def plan_baseline(
    sess: Session, opts: RunOptions, checks: list[Check], results_root: Path
) -> baselines.Baseline | None:
    relative = [c.text for c in checks if c.relative]
    if opts.baseline is None:
        if opts.baseline_anyway:
            raise UsageError("--baseline-anyway goes with --baseline prev|last|RUN")
        if relative:
            raise UsageError(
                f"relative check {relative[0]!r} compares with a baseline run: "
                "add --baseline prev|last|RUN"
            )
        return None
    if not opts.headless:
        raise UsageError("--baseline judges a headless run: add --headless and -t")
    return baselines.find(results_root, sess.stack.name, opts.baseline, opts.baseline_anyway)


def profile_checks(prof: Profile | None) -> list[Check]:
    """A profile's own checks (they stand in for [checks]; --check stands in for both)."""
    if prof is None:
        return []
    if isinstance(prof.checks, ChecksSection):
        return checks_from_table(prof.checks)
    try:
        return [parse_check(c) for c in prof.checks]
    except UsageError as err:
        raise UsageError(f"[profiles.{prof.name}] checks: {err}") from None


def locust_env(sess: Session, prof: Profile | None) -> dict[str, str]:
    """[locust] env, the profile's over it; with otel, the OTEL_* variables under both."""
    cfg = sess.stack.config
    env = {**cfg.locust.env, **(prof.env if prof else {})}
    if cfg.locust.otel:
        check_otel_here(sess)
        env = {**otel_env(os.environ), **env}  # swarm.toml's own [locust] env wins
    return env


def otel_env(environ: Mapping[str, str]) -> dict[str, str]:
    """This machine's OTEL_* variables, for Locust on every node. OTEL_EXPORTER_OTLP_HEADERS
    often carries an API key: they travel as [locust] env does. A name a shell cannot export
    would break the env file, so it is left out (the SDK reads none such)."""
    return {k: v for k, v in environ.items() if k.startswith(OTEL_PREFIX) and ENV_NAME_RE.match(k)}


def check_otel_here(sess: Session) -> None:
    """[locust] otel on a provider that runs this machine's Locust (local): its Python must
    have the extra, or Locust would log an error and run without export."""
    if sess.provider.runs_bootstrap:
        return  # the nodes' bootstrap installs locust[otel]
    missing = missing_for_extra(OTEL_EXTRA)
    if missing:
        raise UsageError(
            f"[locust] otel = true needs locust[otel] on this machine (missing: "
            f"{', '.join(missing)}): pip install 'locust[otel]'"
        )


def stack_nodes(sess: Session) -> tuple[Node, list[Node]]:
    nodes = sess.nodes()
    masters = [n for n in nodes if n.role == Role.MASTER]
    workers = [n for n in nodes if n.role == Role.WORKER]
    if not masters:
        raise UsageError(f"stack {sess.stack.name!r} has no master: run `swarm up master` first")
    if not workers:
        raise UsageError(f"stack {sess.stack.name!r} has no workers: run `swarm up workers -n 2`")
    return masters[0], workers


def processes_per_worker(sess: Session) -> int:
    """[locust] processes (-1: one per core), or [local] workers_processes on local."""
    cfg = sess.stack.config
    return cfg.local.workers_processes if sess.stack.provider == "local" else cfg.locust.processes
