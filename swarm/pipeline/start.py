"""Start a run: ship the files and stop old Locusts (one round trip per host), start the master
and the workers, wait until every worker process is connected."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import TypeVar

from swarm.errors import LocustError, RemoteError, UsageError
from swarm.locust.live import (
    MasterStats,
    RunMeta,
    master_stats_probe,
    summarize,
    write_meta_cmd,
)
from swarm.locust.roster import RosterEntry
from swarm.locust.shell import (
    kill_cmd,
    wait_workers_cmd,
)
from swarm.models import HostResult, Node, Probe, Role
from swarm.pipeline import shipping
from swarm.pipeline.launch import Answer, FirstExec, Launch
from swarm.pipeline.plan import Plan, processes_per_worker
from swarm.pipeline.session import Session
from swarm.remote.base import Runner, tar_bytes
from swarm.remote.fanout import fan_out
from swarm.remote.ship import Shipment, stop_relay_cmd

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
    """Sync, stop, start, wait for the workers; fills in ctx.workers, skipped, meta, seen.

    Each worker gets one exec: stop its old Locust and, when its locustfiles are current,
    start the new one. Its argv needs nothing the hosts say (`--processes -1` lets Locust
    count the cores). The master's old Locust is stopped first: a new worker's hello to the
    old master would be lost, and the new one would never know that worker. In UI mode the
    master starts in that same exec; headless too when its --expect-workers (the workers'
    process count) is known beforehand ([locust] processes >= 1), else once the workers have
    answered. Workers started before their master wait for it (ZeroMQ connects when it
    listens). With --require-all or a baseline nothing may start
    before every worker has answered: one round trip to stop, one to start."""
    plan = ctx.plan
    eager = not plan.require_all and plan.baseline is None
    launch = Launch(ctx, processes_per_worker(ctx.sess))
    shipment = Shipment.of("locustfiles", tar_bytes(plan.files_dir))
    ctx.sess.report.info(
        f"syncing {plan.files_dir.name}/ and stopping old Locust on {1 + len(ctx.workers)} node(s)"
    )
    answers, relay = _sync(ctx, shipment, launch if eager else None)
    # an early relay ends in the exec that waits for the workers (else by itself, once every
    # worker fetched); on the way out of a failure, in one of its own
    stop = stop_relay_cmd(ctx.rd, shipment.tree, relay.pid) if relay is not None else ""
    try:
        _start_all(ctx, launch, answers, stop)
    except BaseException:
        if relay is not None:
            shipping.close_relay(ctx.runners[ctx.master.id], relay)
        raise


def _start_all(ctx: RunContext, launch: Launch, answers: list[HostResult], stop_relay: str) -> None:
    """After the first exec: what it could not start, then the wait for the workers."""
    plan = ctx.plan
    master = answers[0]
    if not master.ok:
        stop_workers(ctx, [a.node for a in answers[1:] if a.ok and a.value.started])
        raise RemoteError(f"master unreachable, nothing started: {master.error}", answers)
    _take_workers(ctx, answers)
    expect_at_start = launch.expect
    launch.prepare(answers)
    if plan.spec.headless and master.value.started and launch.expect != expect_at_start:
        # A worker was skipped, or has other cores than its type said: the master would wait
        # for processes that never come, or start short. Start again, everyone (a worker that
        # said hello to this master would be unknown to the next).
        stop_workers(ctx, [a.node for a in answers if a.ok and a.value.started])
        answers = [
            replace(a, value=replace(a.value, started=False)) if a.ok else a for a in answers
        ]
        master = answers[0]
    ctx.sess.report.info(
        f"starting Locust: master on {ctx.master.name}, {ctx.meta.expected} worker process(es) "
        f"on {len(ctx.workers)} node(s)"
    )
    # what the first exec could not start: the master first (a fan-out of its own), then
    # workers whose locustfiles had to come first
    if not master.value.started:
        fan_out([ctx.master], launch.start_one, what="start")
    fan_out(
        [a.node for a in answers[1:] if a.ok and not a.value.started],
        launch.start_one,
        what="start",
    )
    stats = wait_for_workers(ctx, ctx.meta.expected, before=stop_relay)
    ctx.workers_seen = stats.worker_count
    ctx.sess.report.info(f"{ctx.workers_seen} of {ctx.meta.expected} worker process(es) connected")


def _sync(
    ctx: RunContext, shipment: Shipment, launch: Launch | None
) -> tuple[list[HostResult], shipping.Relay | None]:
    """Stop whatever runs and ask which locustfiles each host has, in one round trip per host;
    with `launch`, start Locust in that same exec where the files are current (the master
    first, see start()). Hosts whose copy differs then get the tree (the master once, the
    workers from it) -> a result per host, master first, its value an Answer; and the relay
    still open, if the master opened one in its turn (FirstExec.relay_early)."""
    first = FirstExec(ctx.rd, shipment)

    def ask(node: Node) -> Answer:
        runner = ctx.runners[node.id]
        if launch is None:
            return first.run(node, runner, None)
        if node.role == Role.MASTER:
            with launch.master_turn():
                runner.connect()
                launch.master_connected.set()
                got = first.run(node, runner, launch if launch.master_first else None)
                return first.relay_early(ctx, launch, got)
        # The master's login first, alone: its exec then runs while the workers log in, and
        # each worker starts as soon as it is in, while the others still log in.
        launch.master_connected.wait(timeout=180)
        runner.connect()
        if not launch.master_done.wait(timeout=180) or launch.master_failed:
            raise RemoteError(f"{node.name}: not started: the master did not answer")
        return first.run(node, runner, launch)

    synced = fan_out([ctx.master, *ctx.workers], ask, what="sync", raise_on_error=False)
    if synced[0].ok and not first.refused:
        synced = _ship_stale(ctx, shipment, synced, first, launch)
    if first.refused:
        # Locust itself refused to start somewhere: no run, nothing left running
        stop_workers(ctx, [r.node for r in synced if r.ok and r.value.started])
        if first.relay is not None:
            shipping.close_relay(ctx.runners[ctx.master.id], first.relay)
        raise LocustError(first.refused[0])
    return synced, first.relay


def _ship_stale(
    ctx: RunContext,
    shipment: Shipment,
    synced: list[HostResult],
    first: FirstExec,
    launch: Launch | None,
) -> list[HostResult]:
    """The locustfiles to the hosts whose copy differs; with `launch`, each such worker's
    start in the same exec as its fetch (unless [locust] env must go on the start's stdin,
    which the fetch's token holds)."""
    stale = [r.node for r in synced[1:] if r.ok and r.value.ship.unpacked != shipment.digest]
    mstate = synced[0].value.ship
    relay = first.relay
    if relay is not None and relay.missed:
        ctx.sess.report.info(relay.missed_line(len(first.fetchers)))
    if not stale and mstate.unpacked == shipment.digest:
        return synced
    then = launch.command if launch is not None and launch.env is None else None
    try:
        sent = shipping.spread(
            ctx.sess,
            shipment,
            ctx.master,
            mstate,
            stale,
            lambda n: ctx.runners[n.id],
            then,
            through_relay=relay is None,  # those the early relay missed: from here
        )
    except RemoteError as e:
        if synced[0].value.started:
            stop_workers(ctx, [ctx.master])
        synced[0] = replace(synced[0], ok=False, error=str(e))
        return synced
    done = {r.node.id: r for r in sent}
    out = []
    for r in synced:
        got = done.get(r.node.id)
        if got is None:
            out.append(r)
        elif not got.ok:
            out.append(got)
        elif isinstance(got.value, shipping.Then) and got.value.exit_code != 0:
            why = got.value.tail or f"exit {got.value.exit_code}"
            first.refused.append(f"{r.node.name}: Locust did not start: {why}")
            out.append(r)
        else:
            out.append(replace(r, value=replace(r.value, started=got.value is not None)))
    return out


def _take_workers(ctx: RunContext, answers: list[HostResult]) -> None:
    """The workers that answered take part; the others are skipped (or, with --require-all,
    or when none answered, nothing starts)."""
    ctx.skipped = [r for r in answers[1:] if not r.ok]
    if ctx.skipped:
        names = ", ".join(f"{r.node.name} ({r.error})" for r in ctx.skipped)
        if ctx.plan.require_all or len(ctx.skipped) == len(ctx.workers):
            stop_workers(ctx, [r.node for r in answers if r.ok and r.value.started])
            raise RemoteError(f"workers unreachable, nothing started: {names}", answers)
        ctx.sess.report.warn(f"skipping unreachable worker(s): {names}")
    ctx.workers = [r.node for r in answers[1:] if r.ok]


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
    ctx: RunContext, expected: int, timeout: float = WORKERS_TIMEOUT, before: str = ""
) -> MasterStats:
    """Until every worker process is connected: one exec, waiting on the master itself (after
    `before`, a command whose output nobody reads)."""
    web_port = ctx.plan.spec.web_port
    # What `swarm status` expects, before anything it could poll: the master may have started
    # before the workers said their hostnames and cores.
    meta = f"(cd {shlex.quote(ctx.rd)} && {write_meta_cmd(ctx.meta)})"
    if before:
        meta = f"({before}) >/dev/null 2>&1; {meta}"
    probe = master_stats_probe(
        ctx.rd, web_port, wait=f"{meta}; {wait_workers_cmd(ctx.rd, web_port, expected, timeout)}"
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
