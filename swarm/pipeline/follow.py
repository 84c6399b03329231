"""Follow a headless run until Locust exits: the master's figures, each worker node's peak
CPU (sampled on the hosts themselves), which workers went missing."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from swarm.errors import SSH_TIMEOUT, SSH_UNREACHABLE, LocustError, RemoteError, SwarmError
from swarm.locust import roster
from swarm.locust.live import LiveView, master_stats_probe, summarize
from swarm.locust.roster import RosterEntry
from swarm.locust.shell import CpuSample, cpu_probe, wait_exit_cmd
from swarm.models import Node, Role
from swarm.pipeline.start import RunContext
from swarm.remote.fanout import fan_out

POLL_S = 1.0
CPU_EVERY = 3  # polls between two CPU samples of the worker hosts
SAMPLE_TIMEOUT_S = 15
END_WAIT_S = 30  # longest single exec waiting for the master's exit (a lost master shows then)
END_GRACE_S = 180  # after the run time: Locust stopping, writing its files


@dataclass
class Followed:
    cpu_peaks: dict[str, float] = field(default_factory=dict)  # node (master too) -> peak %
    missing: list[str] = field(default_factory=list)  # workers that dropped out
    lost: list[str] = field(default_factory=list)  # nodes SSH stopped reaching (the master too)
    error: SwarmError | None = None  # why following stopped early
    interrupted: bool = False  # Ctrl-C: the load was stopped before its end


class CpuSampler:
    """Peak CPU per node, the master's too (a saturated master skews every figure), from
    /proc on the hosts themselves. (Locust's own figure comes every 10 s, its first sample is
    always 0, and it names workers by an id that maps to a node only where hostnames differ.)

    A sample runs beside the follow loop, one at a time: a node gone silent holds it up to its
    timeout, never the master's polls. A node SSH cannot reach any more is `lost`: not sampled
    again, and not waited on when the results are fetched."""

    def __init__(self, ctx: RunContext, peaks: dict[str, float]):
        self.ctx = ctx
        self.peaks = peaks
        self.last: dict[str, CpuSample] = {}
        self.lost: set[str] = set()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._pending: Future[None] | None = None

    def note(self, name: str, pct: float) -> None:
        with self._lock:
            self.peaks[name] = max(self.peaks.get(name, 0.0), pct)

    def sample(self) -> None:
        """Start a sample, unless the last one still runs."""
        if self._pending is None or self._pending.done():
            self._pending = self._pool.submit(self._sample)

    def close(self) -> None:
        """Wait for a sample still running (bounded by its timeout), then end the thread."""
        if self._pending is not None:
            try:
                self._pending.result(timeout=SAMPLE_TIMEOUT_S + 5)
            except Exception:  # noqa: BLE001 - a figure less; the run's outcome stands
                pass
        self._pool.shutdown(wait=False)

    def _sample(self) -> None:
        probe = cpu_probe(self.ctx.rd)

        def one(node: Node) -> CpuSample | None:
            try:
                return self.ctx.ask(node, probe, timeout=SAMPLE_TIMEOUT_S)
            except RemoteError as e:
                if e.code in (SSH_UNREACHABLE, SSH_TIMEOUT):
                    self.lost.add(node.name)
                raise

        processes = self.ctx.meta.with_roster(self.ctx.roster).processes
        nodes = [n for n in self.ctx.nodes if n.name not in self.lost]
        for res in fan_out(nodes, one, what="cpu sample", raise_on_error=False):
            now: CpuSample | None = res.value if res.ok else None
            if now is None:
                continue
            name = res.node.name
            prev = self.last.get(name)
            if prev is not None:
                self.note(name, now.percent_since(prev, processes.get(name, 1)))
            self.last[name] = now


def follow(ctx: RunContext) -> Followed:
    """Poll the master until its Locust exits. Once the run time is over, wait for the exit on
    the master itself (one exec, bounded), so the end is noticed within 0.1 s, not up to a poll
    later. A lost master or a run that never ends is returned as `error`, not raised: the
    results and logs are still fetched."""
    got = Followed()
    sampler = CpuSampler(ctx, got.cpu_peaks)
    try:
        _follow(ctx, got, sampler)
    except RemoteError as e:  # the master stopped answering (powered off, network)
        got.error = LocustError(f"lost the master during the run: {e}")
        sampler.lost.add(ctx.master.name)
    except SwarmError as e:
        got.error = e
    finally:
        sampler.close()
        # a worker that left the run (its machine gone) was not lost
        got.lost = sorted(sampler.lost - roster.left(ctx.roster))
    return got


def _follow(ctx: RunContext, got: Followed, sampler: CpuSampler) -> None:
    run_s = float(ctx.plan.run_s or 0)
    deadline_s = run_s + END_GRACE_S
    web_port = ctx.plan.spec.web_port
    started = time.monotonic()
    end = started + deadline_s
    run_end = started + run_s if run_s else end
    missing: set[str] = set()
    try:
        with ctx.sess.report.running() as say:
            for i in range(int(deadline_s / POLL_S) + 12):
                now = time.monotonic()
                wait_s = min(END_WAIT_S, end - now) if now >= run_end else 0
                wait = wait_exit_cmd(ctx.rd, wait_s) if wait_s > 0 else ""
                probe = master_stats_probe(ctx.rd, web_port, wait=wait)
                stats = ctx.ask(ctx.master, probe, timeout=20 + wait_s)
                if not stats.running:
                    break
                take_roster(ctx, stats.roster)
                view = summarize(stats)
                if i % CPU_EVERY == 0 and view.state.active:
                    sampler.sample()
                for w in view.workers:
                    if w.node:  # an id swarm cannot map to a node is no node's figure
                        sampler.note(w.node, float(w.cpu or 0))
                if view.state.active:
                    # short of what the run expects now (joiners in, leavers out)
                    short = max(0, view.workers_expected - view.workers_connected)
                    ctx.workers_seen = min(ctx.workers_seen, ctx.meta.expected - short)
                    missing.update(view.missing)
                    say(progress_line(view, time.monotonic() - started, run_s))
                if time.monotonic() > end:
                    raise LocustError(
                        f"the run did not end within {deadline_s:.0f}s: stop it with "
                        "`swarm killall`"
                    )
                if not wait:
                    time.sleep(max(0.0, min(POLL_S, run_end - time.monotonic())))
    finally:
        got.missing = sorted(missing)


def take_roster(ctx: RunContext, entries: list[RosterEntry]) -> None:
    """Workers that joined the run (`swarm up workers` meanwhile) get a runner, so they are
    sampled, stopped at the end and their logs fetched; those that left are none of these.
    The stack is listed again only when a name is new to this run."""
    if len(entries) <= len(ctx.roster):
        return
    have = {n.name for n in ctx.workers}
    gone = roster.left(entries)
    new = {e.worker for e in roster.joined(entries)} - have - gone
    workers = [w for w in ctx.workers if w.name not in gone]
    if new:
        sess = ctx.sess
        try:
            listed = sess.nodes(Role.WORKER)
        except SwarmError:
            return  # the next poll asks again
        for node in listed:
            if node.name in new:
                if node.id not in ctx.runners:
                    ctx.runners[node.id] = sess.provider.runner(sess.stack, node)
                workers.append(node)
    for e in entries[len(ctx.roster) :]:
        _say_move(ctx, e)
    had = bool(ctx.workers)
    ctx.roster = list(entries)
    ctx.departed += [w for w in ctx.workers if w.name in gone]
    ctx.workers = workers
    if had and not workers:
        # Locust's master stops the test when its last worker quits, and waits for its run
        # time: the figures are those until now
        ctx.sess.report.warn(
            "every worker left the test: Locust stopped the load; the run ends at its run "
            "time, with the figures until now"
        )


def _say_move(ctx: RunContext, e: RosterEntry) -> None:
    try:
        since = (datetime.fromisoformat(e.at) - ctx.started_at).total_seconds()
        when = f" at {_clock(max(0.0, since))}"
    except (ValueError, TypeError):
        when = ""
    if e.event == roster.Move.LEFT:
        ctx.sess.report.info(f"{e.worker} left the test{when}")
    else:
        s = "es" if e.processes != 1 else ""
        ctx.sess.report.info(f"{e.worker} joined the test{when} ({e.processes} process{s})")


def progress_line(view: LiveView, elapsed_s: float, run_s: float) -> str:
    """'running 0:42 of 5:00 (4:18 left): 100 users, 212.4 rps, 0.5 % failures, 6 of 6
    workers'"""
    left = _clock(max(0.0, run_s - elapsed_s))
    when = f"{_clock(elapsed_s)} of {_clock(run_s)} ({left} left)" if run_s else _clock(elapsed_s)
    return (
        f"running {when}: {view.users} users, {view.total_rps:.1f} rps, "
        f"{view.fail_ratio * 100:.1f} % failures, "
        f"{view.workers_connected} of {view.workers_expected} workers"
    )


def _clock(seconds: float) -> str:
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"
