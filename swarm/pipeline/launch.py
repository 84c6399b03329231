"""A run's start commands, and each node's first exec of the run: which locustfiles it has,
stop its Locust, say its cores and hostname, and start the new Locust where it can
(start.py knows the order)."""

from __future__ import annotations

import contextlib
import shlex
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from swarm.errors import LocustError, RemoteError
from swarm.locust.argv import master_argv, worker_argv
from swarm.locust.live import RUN_META, RunMeta, expected_by_node
from swarm.locust.roster import ROSTER
from swarm.locust.shell import HostFacts, env_file, start_cmd, stop_probe
from swarm.models import HostResult, Node, Role
from swarm.pipeline import shipping
from swarm.pipeline.baseline import AT_START, PLANNED, this_run
from swarm.remote.base import Runner
from swarm.remote.ship import FETCH_FAILED, Shipment, ShipState, state_probe, unpacked_test

if TYPE_CHECKING:
    from swarm.pipeline.start import RunContext


@dataclass(frozen=True)
class Answer:
    """What a node said in the round trip before a run."""

    ship: ShipState
    facts: HostFacts
    started: bool  # its new Locust runs already (its locustfiles were current)


STARTED_MARK = "swarm-started"  # after a start in the first exec, its pid on the next line


class FirstExec:
    """A node's first exec of a run: which locustfiles it has, stop its Locust (and say its
    cores and hostname), and maybe start the new Locust when its locustfiles are current, or,
    once the master's relay serves them (`relay`), once they are fetched."""

    def __init__(self, rd: str, shipment: Shipment):
        self.shipment = shipment
        self.have, self.stop = state_probe(rd, shipment.tree), stop_probe(rd)
        self.probe = f"{self.have.command}; {self.stop.command}"
        self.current = unpacked_test(rd, shipment.tree, shipment.digest)
        self.refused: list[str] = []  # "<node>: Locust did not start: ..." (list.append: atomic)
        # The master's relay, opened in its turn when the master had to get the files: a
        # worker whose copy differs then fetches in its first exec, as the workers run later.
        self.relay: shipping.Relay | None = None
        self.fetchers: list[str] = []  # workers that had to fetch (append: atomic)

    def relay_early(self, ctx: RunContext, launch: Launch, got: Answer) -> Answer:
        """In the master's turn, when its locustfiles differ: the files to it and its relay
        started, in one exec, so that the workers (still logging in) fetch and start in their
        first exec; then the master's start, where it goes first -> its Answer now. The
        workers' copies differ too, as a rule (a new master, changed files). Not with [locust]
        env: the start reads it from stdin, where the fetch's token goes."""
        master, s = ctx.master, self.shipment
        if (
            got.ship.unpacked == s.digest
            or not ctx.workers
            or launch.env is not None
            or not shipping.can_relay(ctx.sess, master)
        ):
            return got
        runner = ctx.runners[master.id]
        relay = shipping.open_relay(
            ctx.sess, master, runner, s, got.ship, len(ctx.workers), unpack=True
        )
        if relay is None:
            return got  # said why; start._ship_stale sends to the workers from here
        self.relay = relay
        got = replace(got, ship=ShipState(s.digest, s.digest, relay.sha))
        if launch.master_first:
            launch.start_one(master)
            got = replace(got, started=True)
        return got

    def answer(self, out: str, started: bool) -> Answer:
        ship = self.have.parse(out)
        if started:  # it started on the files of this run: they are there now
            ship = replace(ship, unpacked=self.shipment.digest)
        return Answer(ship, self.stop.parse(out), started)

    def run(self, node: Node, runner: Runner, launch: Launch | None) -> Answer:
        """The exec; with `launch`, the start too (after the fetch, with a relay)."""
        if launch is None:
            return self.answer(runner.run(self.probe, timeout=120).stdout, started=False)
        relay = self.relay if node.role != Role.MASTER else None
        start = f"echo {STARTED_MARK}; {launch.command(node)}"
        if relay is None:
            cmd = f"{self.probe}; echo; if {self.current}; then {start}; fi"
            stdin, timeout = launch.env, 180.0
        else:
            # the fetch's own exit code kept: FETCH_FAILED says the relay was out of reach
            cmd = f"{self.probe}; echo; {relay.fetch} || exit $?; {start}"
            stdin, timeout = relay.stdin, 180 + relay.timeout  # no [locust] env with a relay
        res = runner.run(cmd, timeout=timeout, stdin=stdin, check=False)
        before, mark, _ = res.stdout.partition(f"\n{STARTED_MARK}\n")
        if mark and res.exit_code != 0:
            why = f"{node.name}: Locust did not start: {res.tail(3) or f'exit {res.exit_code}'}"
            self.refused.append(why)
            raise LocustError(why)
        if relay is not None and self.have.parse(before).unpacked != self.shipment.digest:
            self.fetchers.append(node.name)
            if res.exit_code == FETCH_FAILED:
                relay.miss(node)  # start._ship_stale sends it from here, then starts it
                return self.answer(before, started=False)
        if res.exit_code != 0:
            raise RemoteError(f"{node.name}: command failed (exit {res.exit_code}): {res.tail(3)}")
        return self.answer(before, started=bool(mark))


class Launch:
    """The start commands of one run: the workers' from the start, the master's once its
    worker count is known (UI mode needs none)."""

    def __init__(self, ctx: RunContext, per: int):
        self.ctx, self.per = ctx, per
        spec = ctx.plan.spec
        self.worker_argv = worker_argv(
            spec.locustfile,
            ctx.master.private_ip or "127.0.0.1",
            spec.master_port,
            per,
            spec.worker_args,
            otel=spec.otel,
        )
        # Hosts swarm bootstraps keep a warm (pre-imported) Locust; on `local` it would be one
        # more long-lived process on the user's machine for no gain.
        self.warm = ctx.sess.provider.runs_bootstrap
        # [locust] env goes on the start command's stdin, never on its command line
        self.env = env_file(spec.env) if spec.env else None
        # worker processes the master's --expect-workers says: every worker, until prepare();
        # one per core is known too where the provider knows every worker's cores
        cores = [w.cores for w in ctx.workers]
        self.predicted = per == -1 and bool(cores) and all(cores)
        self.expect = per * len(ctx.workers) if per > 0 else 0
        if self.predicted:
            self.expect = sum(c or 0 for c in cores)
        self.master_connected = threading.Event()
        self.master_done = threading.Event()
        self.master_failed = False

    @contextlib.contextmanager
    def master_turn(self) -> Iterator[None]:
        """The master's first exec: the workers wait on these events (failed before done)."""
        try:
            yield
        except BaseException:
            self.master_failed = True
            raise
        finally:
            self.master_connected.set()
            self.master_done.set()

    @property
    def master_first(self) -> bool:
        """Whether the master's start can go in its first exec: UI mode needs no worker count,
        headless knows it with [locust] processes >= 1, or one per core where the provider
        knows each worker's cores (EC2's vCPUs tag), every worker answering as expected.
        Otherwise it starts after the workers: soon after, or at scale a worker unanswered
        for 5 s says hello again, and a master that gets both restarts its spawn."""
        return not self.ctx.plan.spec.headless or self.per > 0 or self.predicted

    def command(self, node: Node) -> str:
        """The start command of a node; the master's once prepare() has run (or UI mode)."""
        rd, spec = self.ctx.rd, self.ctx.plan.spec
        has_env = self.env is not None
        if node.role != Role.MASTER:
            return start_cmd(rd, self.worker_argv, warm=self.warm, env=has_env)
        spec = replace(spec, expect_workers=max(1, self.expect))
        # the last run's roster and expectations go: `status` must not show them for this one
        return (
            f"mkdir -p {shlex.quote(rd)} && (cd {shlex.quote(rd)} && rm -f {ROSTER} {RUN_META}) "
            "&& "
            + start_cmd(rd, master_argv(spec), fresh_results=True, warm=self.warm, env=has_env)
        )

    def prepare(self, answers: list[HostResult]) -> None:
        """The run's expectations, from what the workers said."""
        ctx = self.ctx
        facts = {a.node.id: a.value.facts for a in answers[1:] if a.ok}
        by_node = expected_by_node(ctx.workers, {k: f.nproc for k, f in facts.items()}, self.per)
        expected = self.expect = sum(by_node.values())
        if ctx.plan.baseline is not None:
            # the worker counts for sure, before any Locust starts
            now = this_run(ctx.plan.spec, ctx.plan.files_dir, len(ctx.workers), expected)
            ctx.baseline_differences = ctx.plan.baseline.check(now, PLANNED + AT_START)
        ctx.meta = RunMeta(
            expected,
            by_node,
            {w.name: facts[w.id].hostname for w in ctx.workers},
            ctx.plan.spec.locustfile,
            ctx.plan.spec.host,
            ctx.started_at.isoformat(timespec="seconds"),
            self.worker_argv,
            self.per,
            ctx.plan.profile,
        )

    def start_one(self, node: Node) -> str:
        return self.ctx.runners[node.id].run(self.command(node), timeout=60, stdin=self.env).stdout
