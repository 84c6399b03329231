"""Bringing a stack up and down: launch, wait, bootstrap, reconcile, tear down.

Providers and runners never call each other; this module does, and reports progress through
the session's Reporter.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass, field

from swarm.errors import ProviderError, SwarmError, UsageError
from swarm.locust.shell import kill_cmd, warm_stop_cmd
from swarm.models import HostResult, Node, Role, order_key
from swarm.pipeline import bootstrap, cost, expiry, leaving, midrun
from swarm.pipeline.progress import Board, Phase
from swarm.pipeline.session import Session, locust_version
from swarm.remote.fanout import fan_out

MAX_WORKERS = 500
READY_TIMEOUT = 600  # seconds for the provider to say "running"


@dataclass
class UpResult:
    created: list[Node] = field(default_factory=list)
    removed: list[Node] = field(default_factory=list)
    bootstrap: list[HostResult] = field(default_factory=list)
    nothing_to_do: str = ""
    joined: list[midrun.Joined] = field(default_factory=list)  # into the running test
    left: list[Node] = field(default_factory=list)  # out of the running test

    @property
    def failed(self) -> list[HostResult]:
        return [r for r in self.bootstrap if not r.ok]

    @property
    def reason(self) -> str:
        """Why the failed nodes failed, when it is one reason for all of them."""
        reasons = {r.reason for r in self.failed}
        return reasons.pop() if len(reasons) == 1 else ""


@dataclass
class DownResult:
    removed: list[Node] = field(default_factory=list)
    nothing_to_do: str = ""
    left: list[Node] = field(default_factory=list)  # out of the running test


def check_count(n: object) -> int:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise UsageError(
            f"-n must be a whole number of at least 1, got {n!r} "
            "(use `swarm down workers` to remove all workers)"
        )
    if n > MAX_WORKERS:
        raise UsageError(f"-n {n} is more than swarm's limit of {MAX_WORKERS} workers per stack")
    return n


def up_master(sess: Session) -> UpResult:
    bootstrap.check_dir(sess)
    nodes = sess.nodes()  # one listing per step: on EC2 each is an API call
    existing = [n for n in nodes if n.role == Role.MASTER]
    if existing:
        m = existing[0]
        return UpResult(
            nothing_to_do=f"stack {sess.stack.name!r} already has a master "
            f"({m.id}, {m.state}); nothing to do"
        )
    return _launch_and_bootstrap(sess, Role.MASTER, 1, nodes)


def scale_workers(sess: Session, n: int) -> UpResult:
    check_count(n)
    bootstrap.check_dir(sess)
    nodes = sess.nodes()
    if not any(x.role == Role.MASTER for x in nodes):
        raise UsageError(f"stack {sess.stack.name!r} has no master: run `swarm up master` first")
    workers = [x for x in nodes if x.role == Role.WORKER]
    if len(workers) == n:
        return UpResult(
            nothing_to_do=f"stack {sess.stack.name!r} already has {n} workers; nothing to do"
        )
    master = next(x for x in nodes if x.role == Role.MASTER)
    if len(workers) > n:
        extras = newest(workers, len(workers) - n)
        sess.report.info(f"removing {len(extras)} worker(s): {', '.join(w.name for w in extras)}")
        left = _leave_running_test(sess, master, extras)
        remove(sess, extras)
        return UpResult(removed=extras, left=left)
    result = _launch_and_bootstrap(sess, Role.WORKER, n - len(workers), nodes)
    # Two `up workers -n N` at once both launch: re-check and drop the newest extras. Both
    # callers pick the same nodes (same order), so the stack converges on N. (After the
    # bootstrap: earlier, a caller still waiting for its instances could see them terminated.)
    workers = sess.nodes(Role.WORKER)
    # The other caller may already have removed some of ours (they were the newest): they are
    # gone, not failed; their (failed) bootstrap is not this command's failure.
    alive = {w.id for w in workers}
    taken = [c for c in result.created if c.id not in alive]
    if taken:
        sess.report.warn(
            f"another `swarm up` raced this one and removed {len(taken)} of the "
            "worker(s) it launched"
        )
        result.created = [c for c in result.created if c.id in alive]
        result.bootstrap = [r for r in result.bootstrap if r.node.id in alive]
    if len(workers) > n:
        extras = newest(workers, len(workers) - n)
        sess.report.warn(
            f"another `swarm up` raced this one: removing {len(extras)} extra worker(s)"
        )
        remove(sess, extras)
        gone = {e.id for e in extras}
        result.removed = extras
        result.created = [c for c in result.created if c.id not in gone]
        result.bootstrap = [r for r in result.bootstrap if r.node.id not in gone]
    result.joined = _join_running_test(sess, master, result)
    return result


def _join_running_test(sess: Session, master: Node, result: UpResult) -> list[midrun.Joined]:
    """The new workers that bootstrapped join the test the master runs, if it runs one."""
    failed = {r.node.id for r in result.failed}
    ready = [c for c in result.created if c.id not in failed]
    joins_later = "they take part from the next `swarm run`"
    test = midrun.running_test(sess, master, joins_later) if ready else None
    return midrun.join(sess, test, ready) if test is not None else []


def _leave_running_test(sess: Session, master: Node | None, nodes: list[Node]) -> list[Node]:
    gone_anyway = "they are removed all the same (the run may count them missing)"
    test = midrun.running_test(sess, master, gone_anyway) if master is not None else None
    return leaving.leave(sess, test, nodes) if test is not None else []


def _launch_and_bootstrap(sess: Session, role: Role, count: int, nodes: list[Node]) -> UpResult:
    if sess.provider.runs_bootstrap:  # offline: can the nodes be installed? before a launch
        bootstrap.check_offline(sess)
    with sess.report.phases() as board:
        result = UpResult(created=_launch(sess, role, count, nodes, board))
        if sess.provider.runs_bootstrap:
            master = next((x for x in nodes if x.role == Role.MASTER), None)
            relay_from = master if role == Role.WORKER else None
            result.bootstrap = bootstrap.run(sess, result.created, board, relay_from)
        else:
            for node in result.created:
                board.move(node.id, Phase.READY, node.name)
            sess.report.info(
                f"{sess.stack.provider} provider: bootstrap.sh is not run here (it "
                "installs system packages); using this machine's Locust "
                f"{locust_version()}"
            )
    return result


def newest(nodes: list[Node], k: int) -> list[Node]:
    return sorted(nodes, key=order_key)[-k:] if k > 0 else []


def _launch(
    sess: Session, role: Role, count: int, existing: list[Node], board: Board
) -> list[Node]:
    """Launch count nodes and wait until the provider says they run. -> the new nodes, named.
    `existing`: the stack's listing this command has just taken."""
    p, stack = sess.provider, sess.stack
    p.check_launch(stack, role, count)  # a bad AMI / instance type: refused, nothing created
    # boot + bootstrap, and systemd refuses logins 5 minutes before the power-off
    expiry.check_room(sess, existing, expiry.MARGIN_S, "a new node needs 7m", margin_s=0)
    note = cost.estimate(sess, role, count, existing)
    if note:
        sess.report.info(note)  # before anything is launched
    p.prepare(stack)
    sess.flush_notices()
    sess.report.info(f"launching {count} {role}{'s' if count > 1 else ''} on {stack.provider}")
    started = time.monotonic()
    nodes = p.create_nodes(stack, role, count)
    sess.flush_notices()
    board.add([n.id for n in nodes], Phase.LAUNCHING, started)
    if note and cost.fell_back(sess, nodes):
        # spot had no capacity: the estimate printed before the launch no longer holds
        again = cost.estimate(sess, role, 0, existing + nodes)
        if again:
            sess.report.info(again)
    try:
        ready = p.wait_ready(stack, nodes, READY_TIMEOUT)
    except Exception as e:
        for n in nodes:
            board.fail(n.id, e)
        # Nothing half-made survives: terminate what this call launched, then report.
        try:
            p.terminate_nodes(stack, nodes)
        except Exception as cleanup_error:  # keep the first error; say what may be left
            raise ProviderError(
                f"{e}; and terminating the {len(nodes)} new node(s) failed too "
                f"({cleanup_error}): run `swarm down`"
            ) from e
        if isinstance(e, SwarmError):
            raise
        raise ProviderError(f"waiting for the new {role}(s) failed: {e}") from e
    ids = {n.id for n in ready}
    named = [n for n in sess.nodes(role) if n.id in ids] or ready
    for n in named:
        board.move(n.id, Phase.RUNNING, n.name or n.id)
    return named


def remove(sess: Session, nodes: list[Node]) -> None:
    """Terminate nodes. Where the machine outlives the node (hosts, local), first stop what
    swarm runs there (Locust by pid file, the warm Locust) and remove the remote dir: a host
    that cannot be reached is named and forgotten all the same."""
    if sess.provider.keeps_machines:
        rd = sess.remote_dir

        def clean(node: Node) -> None:
            r = sess.provider.runner(sess.stack, node)
            try:
                r.run(
                    f"{kill_cmd(rd)} >/dev/null; {warm_stop_cmd(rd)}; rm -rf {shlex.quote(rd)}",
                    timeout=60,
                )
            finally:
                r.close()

        for res in fan_out(nodes, clean, what="clean up", raise_on_error=False):
            if not res.ok:
                sess.report.warn(
                    f"{res.node.id}: could not stop Locust / remove {rd}: "
                    f"{res.error}; it is removed from the stack anyway"
                )
    sess.provider.terminate_nodes(sess.stack, nodes)


def down(sess: Session, role: Role | None = None) -> DownResult:
    nodes = sess.nodes(role)
    if not nodes:
        if role is None:
            sess.provider.cleanup(sess.stack)
            sess.flush_notices()
        what = f"{role}s" if role else "nodes"
        return DownResult(nothing_to_do=f"stack {sess.stack.name!r} has no {what}; nothing to do")
    spent = cost.spent_so_far(sess, nodes)  # priced while the nodes still exist
    sess.report.info(f"terminating {len(nodes)} node(s) of stack {sess.stack.name!r}")
    left: list[Node] = []
    if role == Role.WORKER:  # the master stays: a test it runs goes on without them
        master = next(iter(sess.nodes(Role.MASTER)), None)
        left = _leave_running_test(sess, master, nodes)
    remove(sess, nodes)
    if spent:
        sess.report.info(
            f"these nodes cost about {cost.format_usd(spent.usd)} (running time × current price)"
        )
    if role is None:
        sess.provider.cleanup(sess.stack)
    sess.flush_notices()
    return DownResult(removed=nodes, left=left)
