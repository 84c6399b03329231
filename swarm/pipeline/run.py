"""A run, from plan to record: plan → start → follow → fetch → judge → record.

Every step is the same on every provider; only the Runner behind each node differs. This is
the one module that knows their order; each phase takes the RunContext and returns its result.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeVar

from swarm import __version__
from swarm.errors import Interrupted, LocustError, UsageError
from swarm.locust import roster
from swarm.locust.argv import EXCEPTIONS_CSV, FAILURES_CSV, STATS_CSV
from swarm.locust.shell import kill_cmd, running_cmd, stop_test_cmd
from swarm.locust.stats import (
    Failure,
    Raised,
    Summary,
    parse_exceptions_csv,
    parse_failures_csv,
    parse_stats_csv,
)
from swarm.models import HostResult, Node
from swarm.pipeline import baseline as baselines
from swarm.pipeline import expiry, fetch, record
from swarm.pipeline.follow import Followed, follow
from swarm.pipeline.judge import CheckResult, Judgement, Verdict, saturated
from swarm.pipeline.plan import RunOptions, plan_run, processes_per_worker, stack_nodes
from swarm.pipeline.session import Session, locust_version
from swarm.pipeline.start import RunContext, start, stop_workers
from swarm.remote.fanout import fan_out

T = TypeVar("T")
# After a run's end the master tells its workers to quit and exits without waiting for them
# (final_stats): each worker's log is taken once its Locust has exited, within this bound.
WORKERS_QUIT_S = 5.0


@dataclass
class RunOutcome:
    results_dir: Path | None = None
    summary: Summary | None = None
    exit_code: int = 0  # Locust's
    checks: list[CheckResult] = field(default_factory=list)
    workers_expected: int = 0
    workers_seen: int = 0
    skipped: list[HostResult] = field(default_factory=list)
    saturated: dict[str, float] = field(default_factory=dict)  # node -> peak CPU % (master too)
    cpu_peaks: dict[str, float] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # workers that dropped out
    judgement: Judgement = Judgement(Verdict.PASS, 0, "")
    failures: list[Failure] = field(default_factory=list)  # most frequent first
    raised: list[Raised] = field(default_factory=list)  # the tasks' exceptions
    baseline: str | None = None  # the id of the run relative checks compared with
    baseline_differences: list[str] = field(default_factory=list)  # --baseline-anyway's


def run(sess: Session, opts: RunOptions, results_root: Path = Path("results")) -> RunOutcome:
    plan = plan_run(sess, opts, results_root)
    master, workers = stack_nodes(sess)
    if plan.baseline is not None:
        # processes = -1 (a process per core) is known once the workers answered: start() checks
        per = processes_per_worker(sess)
        processes = per * len(workers) if per > 0 else None
        plan.baseline.check(
            baselines.this_run(plan.spec, plan.files_dir, len(workers), processes),
            baselines.AT_START if processes else baselines.AT_START[:1],
        )
    if plan.run_s:
        expiry.check_room(
            sess, [master, *workers], plan.run_s, f"the run needs {plan.spec.run_time}"
        )
    runners = {n.id: sess.provider.runner(sess.stack, n) for n in [master, *workers]}
    ctx = RunContext(sess, plan, master, workers, runners)
    try:
        start(ctx)
        outcome = RunOutcome(
            workers_expected=ctx.meta.expected,
            workers_seen=ctx.workers_seen,
            skipped=ctx.skipped,
            baseline=plan.baseline.id if plan.baseline else None,
            baseline_differences=ctx.baseline_differences,
        )
        if plan.baseline is not None and ctx.baseline_differences:
            sess.report.warn(
                f"baseline {plan.baseline.id} is not comparable with this run (baseline vs "
                f"now: {'; '.join(ctx.baseline_differences)}): compared all the same "
                "(--baseline-anyway)"
            )
        if not plan.spec.headless:
            return outcome
        # headless: follow the run, then bring everything back, even after a failure
        try:
            followed = follow(ctx)
        except KeyboardInterrupt:
            try:
                return _finish(ctx, _stop_load(ctx), outcome, results_root)
            except KeyboardInterrupt:
                names = ", ".join(n.name for n in ctx.nodes)
                raise Interrupted(
                    f"interrupted again: Locust may still run on {names}: "
                    "stop it with `swarm killall`"
                ) from None
        return _finish(ctx, followed, outcome, results_root)
    finally:
        for r in runners.values():
            r.close()


def _stop_load(ctx: RunContext) -> Followed:
    """Ctrl-C during a headless run: stop the test everywhere, then bring back what it did.
    The master first: its API's stop returns once every worker has stopped and sent its last
    figures; then SIGTERM, on which it writes its files; then the workers, whatever is left."""
    sess = ctx.sess
    sess.report.warn(
        "interrupted: stopping the load on every node and fetching what it did "
        "(Ctrl-C again to leave it running)"
    )

    stop_master = f"{stop_test_cmd(sess.ports.web)}; {kill_cmd(ctx.rd)}"
    results = fan_out(
        [ctx.master],
        lambda n: ctx.runners[n.id].run(stop_master, timeout=60),
        what="stop",
        raise_on_error=False,
    )
    _warn_unstopped(sess, results + stop_workers(ctx))
    return Followed(interrupted=True)


def _warn_unstopped(sess: Session, results: list[HostResult]) -> None:
    for res in results:
        if not res.ok:
            sess.report.warn(f"could not stop Locust on {res.node.name}: {res.error}")


def _finish(
    ctx: RunContext, followed: Followed, outcome: RunOutcome, results_root: Path
) -> RunOutcome:
    """fetch → judge → record; then raise what went wrong, naming where the results are."""
    sess = ctx.sess
    ended_at = datetime.now(timezone.utc)
    error = followed.error
    outcome.cpu_peaks, outcome.missing = followed.cpu_peaks, followed.missing
    outcome.workers_seen = ctx.workers_seen
    out = fetch.results_dir_for(results_root, sess.stack.name, ctx.started_at)
    outcome.results_dir = out
    lost = set(followed.lost)
    if ctx.master.name in lost:
        # Without their master the workers would go on loading the target for a minute
        # (Locust's heartbeat timeout).
        _warn_unstopped(sess, stop_workers(ctx, [w for w in ctx.workers if w.name not in lost]))
    # the master may be gone (powered off mid-run): still fetch from the others
    try:
        quitting = 0.0 if followed.interrupted or error is not None else WORKERS_QUIT_S
        code = fetch.fetch(sess, ctx.master, ctx.workers, ctx.runners, out, lost, quitting)
    except OSError as e:
        raise fetch.cannot_save(out, e) from e
    outcome.exit_code = 1 if code is None else code
    if code is None:
        error = error or LocustError(
            f"the Locust master ended without an exit code: see {out}/logs/master.log"
        )
    outcome.summary = _read(out / STATS_CSV, parse_stats_csv)
    outcome.failures = _read(out / FAILURES_CSV, parse_failures_csv) or []
    outcome.raised = _read(out / EXCEPTIONS_CSV, parse_exceptions_csv) or []
    if outcome.summary is not None:
        peaks = {k: round(v, 1) for k, v in outcome.cpu_peaks.items()}
        outcome.summary = replace(outcome.summary, workers_cpu=peaks)
        base = ctx.plan.baseline.summary if ctx.plan.baseline else None
        outcome.checks = [c.evaluate(outcome.summary, base) for c in ctx.plan.checks]
    outcome.saturated = saturated(outcome.cpu_peaks)
    outcome.judgement = (
        Judgement.interrupted()
        if followed.interrupted
        else Judgement.of(
            outcome.exit_code,
            outcome.checks,
            broken=error is not None or outcome.summary is None,
            failures=outcome.summary.total.failures if outcome.summary else 0,
            raised=sum(e.count for e in outcome.raised),
        )
    )
    try:
        record.write(out, run_record(ctx, outcome, ended_at))
    except OSError as e:
        raise fetch.cannot_save(out, e) from e
    if followed.interrupted:
        return outcome  # the CLI says where the partial results are
    if error is not None:
        raise LocustError(
            f"{error} (logs and any partial results are in {out})", code=error.code
        ) from error
    if outcome.summary is None:
        raise LocustError(f"the run produced no statistics: see {out}/logs/master.log")
    return outcome


def _read(csv_path: Path, parse: Callable[[str], T]) -> T | None:
    try:
        return parse(csv_path.read_text()) if csv_path.is_file() else None
    except (ValueError, OSError):
        return None


def run_record(ctx: RunContext, outcome: RunOutcome, ended_at: datetime) -> record.RunRecord:
    sess, plan, spec = ctx.sess, ctx.plan, ctx.plan.spec
    took = roster.participants(ctx.meta.started_at, ctx.meta.processes, ctx.roster)
    types: dict[str, int] = {}
    for n in [*ctx.nodes, *ctx.departed]:
        t = n.instance_type or sess.stack.provider
        types[t] = types.get(t, 0) + 1
    return record.RunRecord(
        swarm_version=__version__,
        locust_version=locust_version(),
        python=platform.python_version(),
        stack=sess.stack.name,
        provider=sess.stack.provider,
        region=sess.provider.region,
        instances=record.Instances(ctx.master.instance_type, len(took), types),
        locustfile=spec.locustfile,
        files=record.file_hashes(plan.files_dir),
        host=spec.host,
        users=spec.users,
        spawn_rate=spec.spawn_rate,
        run_time=spec.run_time,
        profile=plan.profile,
        extra_args=list(spec.extra_args),
        worker_args=list(spec.worker_args),
        env_names=sorted(spec.env),
        otel=spec.otel,
        started_at=ctx.started_at.isoformat(timespec="seconds"),
        ended_at=ended_at.isoformat(timespec="seconds"),
        verdict=outcome.judgement.verdict,
        swarm_exit_code=outcome.judgement.exit_code,
        exit_code=outcome.exit_code,
        workers_expected=outcome.workers_expected,
        workers_seen=outcome.workers_seen,
        workers=took,
        skipped_workers=[r.node.name for r in outcome.skipped],
        saturated_workers=outcome.saturated,
        missing_workers=outcome.missing,
        workers_cpu_peak={
            k: round(v, 1) for k, v in outcome.cpu_peaks.items() if k != ctx.master.name
        },
        master_cpu_peak=(
            round(outcome.cpu_peaks[ctx.master.name], 1)
            if ctx.master.name in outcome.cpu_peaks
            else None
        ),
        baseline=outcome.baseline,
        baseline_differences=outcome.baseline_differences,
        checks=outcome.checks,
        summary=outcome.summary,
    )


def killall(sess: Session) -> list[HostResult]:
    nodes = sess.nodes()
    if not nodes:
        raise UsageError(f"stack {sess.stack.name!r} has no nodes")
    rd = sess.remote_dir

    def kill(node: Node) -> bool:
        """-> whether a Locust test ran there (the warm Locust is left: it runs no test)."""
        r = sess.provider.runner(sess.stack, node)
        try:
            out = r.run(f"{running_cmd(rd)}; {kill_cmd(rd)} >/dev/null", timeout=60).stdout
            return out.strip().splitlines()[:1] == ["yes"]
        finally:
            r.close()

    return fan_out(nodes, kill, what="killall")
