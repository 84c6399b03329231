"""Start a run: ship the files and stop old Locusts (one round trip per host), start the master
and the workers, wait until every worker process is connected."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import TypeVar

from swarm.errors import LocustError, RemoteError, UsageError
from swarm.locust.argv import master_argv, worker_argv
from swarm.locust.live import (
    MasterStats,
    RunMeta,
    expected_by_node,
    master_stats_probe,
    summarize,
    write_meta_cmd,
)
from swarm.locust.roster import ROSTER, RosterEntry
from swarm.locust.shell import (
    HostFacts,
    env_file,
    kill_cmd,
    start_cmd,
    stop_probe,
    wait_workers_cmd,
)
from swarm.models import HostResult, Node, Probe, Role
from swarm.pipeline import shipping
from swarm.pipeline.baseline import AT_START, PLANNED, this_run
from swarm.pipeline.plan import Plan, processes_per_worker
from swarm.pipeline.session import Session
from swarm.remote.base import Runner, tar_bytes
from swarm.remote.fanout import fan_out
from swarm.remote.ship import Shipment, ShipState, state_probe

T = TypeVar("T")
WORKERS_TIMEOUT = 60  # seconds for every worker to connect to the master


@dataclass
class RunContext:
    """One run, as each phase hands it to the next (as Locust's Environment): the nodes taking
    part, a runner per node, and what starting them found out."""

    sess: Session
    plan: Plan
    master: Node
    workers: list[Node]  # the workers that answered and run Locust
    runners: dict[str, Runner]  # node id -> its runner (all nodes of the stack)
    started_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    skipped: list[HostResult] = field(default_factory=list)  # workers that did not answer
    meta: RunMeta = field(default_factory=RunMeta)
    workers_seen: int = 0  # fewest worker processes connected at any poll
    baseline_differences: list[str] = field(default_factory=list)  # --baseline-anyway's
    roster: list[RosterEntry] = field(default_factory=list)  # workers that joined / left since
    departed: list[Node] = field(default_factory=list)  # workers that left the run mid-way

    @property
    def rd(self) -> str:
        return self.sess.remote_dir

    @property
    def nodes(self) -> list[Node]:
        return [self.master, *self.workers]

    def ask(self, node: Node, probe: Probe[T], timeout: float) -> T:
        """Run a probe on a node and parse what it printed (check=False: the parser decides)."""
        return probe.parse(
            self.runners[node.id].run(probe.command, timeout=timeout, check=False).stdout
        )


def start(ctx: RunContext) -> None:
    """Sync, stop, start, wait for the workers; fills in ctx.workers, skipped, meta, seen."""
    sess, rd, plan = ctx.sess, ctx.rd, ctx.plan
    candidates = ctx.workers

    # 1. stop whatever runs, the locustfiles where they differ
    synced = _sync(ctx)
    if not synced[0].ok:
        raise RemoteError(f"master unreachable, nothing started: {synced[0].error}", synced)
    ctx.skipped = [r for r in synced[1:] if not r.ok]
    if ctx.skipped:
        names = ", ".join(f"{r.node.name} ({r.error})" for r in ctx.skipped)
        if plan.require_all or len(ctx.skipped) == len(candidates):
            raise RemoteError(f"workers unreachable, nothing started: {names}", synced)
        sess.report.warn(f"skipping unreachable worker(s): {names}")
    facts: dict[str, HostFacts] = {r.node.id: r.value for r in synced[1:] if r.ok}
    ctx.workers = [r.node for r in synced[1:] if r.ok]

    # 2. start master and workers together: workers retry until the master listens
    per = processes_per_worker(sess)
    by_node = expected_by_node(ctx.workers, {k: f.nproc for k, f in facts.items()}, per)
    expected = sum(by_node.values())
    if plan.baseline is not None:
        # the worker counts for sure, before any Locust starts
        now = this_run(plan.spec, plan.files_dir, len(ctx.workers), expected)
        ctx.baseline_differences = plan.baseline.check(now, PLANNED + AT_START)
    spec = replace(plan.spec, expect_workers=max(1, expected))
    master_ip = ctx.master.private_ip or "127.0.0.1"
    w_argv = worker_argv(
        spec.locustfile, master_ip, spec.master_port, per, spec.worker_args, otel=spec.otel
    )
    ctx.meta = RunMeta(
        expected,
        by_node,
        {w.name: facts[w.id].hostname for w in ctx.workers},
        spec.locustfile,
        spec.host,
        ctx.started_at.isoformat(timespec="seconds"),
        w_argv,
        per,
        plan.profile,
    )
    # Hosts swarm bootstraps keep a warm (pre-imported) Locust; on `local` it would be one
    # more long-lived process on the user's machine for no gain.
    warm = sess.provider.runs_bootstrap

    # [locust] env goes on the start command's stdin, never on its command line
    env = env_file(spec.env) if spec.env else None
    has_env = env is not None

    def start_one(node: Node) -> str:
        if node.role == Role.MASTER:
            # Written first, so `swarm status` knows what to expect from the first poll on.
            cmd = (
                f"mkdir -p {shlex.quote(rd)} && (cd {shlex.quote(rd)} && rm -f {ROSTER} && "
                f"{write_meta_cmd(ctx.meta)}) && "
                + start_cmd(rd, master_argv(spec), fresh_results=True, warm=warm, env=has_env)
            )
        else:
            cmd = start_cmd(rd, w_argv, warm=warm, env=has_env)
        return ctx.runners[node.id].run(cmd, timeout=60, stdin=env).stdout.strip()

    sess.report.info(
        f"starting Locust: master on {ctx.master.name}, {expected} worker process(es) "
        f"on {len(ctx.workers)} node(s)"
    )
    fan_out(ctx.nodes, start_one, what="start")
    stats = wait_for_workers(ctx, expected)
    ctx.workers_seen = stats.worker_count
    sess.report.info(f"{ctx.workers_seen} of {expected} worker process(es) connected")


def _sync(ctx: RunContext) -> list[HostResult]:
    """Stop whatever runs and ask which locustfiles each host has, in one round trip per host;
    only hosts whose copy differs get the tree (the master once, the workers from it)
    -> a result per host, master first, its value the host's HostFacts."""
    sess, rd, plan = ctx.sess, ctx.rd, ctx.plan
    shipment = Shipment.of("locustfiles", tar_bytes(plan.files_dir))
    stop, have = stop_probe(rd), state_probe(rd, shipment.tree)
    sess.report.info(
        f"syncing {plan.files_dir.name}/ and stopping old Locust on {1 + len(ctx.workers)} node(s)"
    )

    def ask(n: Node) -> tuple[ShipState, HostFacts]:
        out = ctx.runners[n.id].run(f"{have.command}; {stop.command}", timeout=120).stdout
        return have.parse(out), stop.parse(out)

    synced = fan_out([ctx.master, *ctx.workers], ask, what="sync", raise_on_error=False)
    if synced[0].ok:
        stale = [r.node for r in synced[1:] if r.ok and r.value[0].unpacked != shipment.digest]
        mstate = synced[0].value[0]
        if stale or mstate.unpacked != shipment.digest:
            try:
                sent = shipping.spread(
                    sess, shipment, ctx.master, mstate, stale, lambda n: ctx.runners[n.id]
                )
            except RemoteError as e:
                synced[0] = replace(synced[0], ok=False, error=str(e))
            else:
                failed = {r.node.id: r for r in sent if not r.ok}
                synced = [failed.get(r.node.id, r) for r in synced]
    return [replace(r, value=r.value[1]) if r.ok else r for r in synced]


def stop_workers(ctx: RunContext, nodes: list[Node] | None = None) -> list[HostResult]:
    """Stop the workers this run started (or Locust on `nodes`), by pid file; a node that
    cannot be reached is left to `swarm killall` (its result says why)."""
    return fan_out(
        ctx.workers if nodes is None else nodes,
        lambda n: ctx.runners[n.id].run(kill_cmd(ctx.rd), timeout=60),
        what="stop",
        raise_on_error=False,
    )


def wait_for_workers(
    ctx: RunContext, expected: int, timeout: float = WORKERS_TIMEOUT
) -> MasterStats:
    """Until every worker process is connected: one exec, waiting on the master itself."""
    web_port = ctx.plan.spec.web_port
    probe = master_stats_probe(
        ctx.rd, web_port, wait=wait_workers_cmd(ctx.rd, web_port, expected, timeout)
    )
    last: MasterStats = ctx.ask(ctx.master, probe, timeout=20 + timeout)
    if last.worker_count >= expected:
        return last
    runner = ctx.runners[ctx.master.id]
    if not last.running:
        # Its workers would retry for minutes, then join the next master on that port.
        stop_workers(ctx)
        q = shlex.quote(ctx.rd)
        got = runner.run(
            f"cat {q}/locust.exit 2>/dev/null; echo @@; tail -n 5 {q}/locust.log",
            timeout=20,
            check=False,
        )
        code, _, log = got.stdout.partition("@@")
        lines = log.strip().splitlines()
        said = lines[-1] if lines else "no log"
        if code.strip() == "2" and "error:" in said:
            # argparse: Locust refused an argument (a --passthrough one, or [locust] extra_args)
            raise UsageError(f"Locust refused its arguments: {said.split('error:', 1)[1].strip()}")
        raise LocustError(
            f"the Locust master exited before the workers connected (its workers are stopped): "
            f"{said}"
        )
    # A headless master would wait for them forever, its workers retrying: stop them all.
    stop_workers(ctx, ctx.nodes)
    absent = summarize(last).missing or [w.name for w in ctx.workers]
    port = ctx.plan.spec.master_port
    raise LocustError(
        f"only {last.worker_count} of {expected} worker process(es) connected within "
        f"{timeout:.0f}s (not connected: {', '.join(absent)}); Locust is stopped: check that "
        f"the workers reach the master on port {port} (security group, firewall), and "
        "`swarm logs`",
        action=f"open port {port} from the workers to the master",
    )
