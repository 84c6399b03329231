"""Bringing a stack up and down: launch, wait, bootstrap, reconcile, tear down.

Providers and runners never call each other; this module does, and reports progress through
the session's Reporter.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from swarm.config.schema import BootstrapSection
from swarm.errors import ProviderError, RemoteError, SwarmError, UsageError
from swarm.locust.shell import kill_cmd, warm_restart_cmd, warm_stop_cmd
from swarm.models import HostResult, Node, Role, order_key
from swarm.paths import default_bootstrap_dir
from swarm.pipeline import cost, expiry, midrun, ship_wheels, shipping, wheelhouse
from swarm.pipeline.progress import Board, Phase
from swarm.pipeline.session import OTEL_EXTRA, Session, locust_version
from swarm.remote.base import Result, tar_bytes
from swarm.remote.fanout import fan_out
from swarm.remote.ship import FETCH_FAILED, Shipment, receive_cmd

MAX_WORKERS = 500
READY_TIMEOUT = 600  # seconds for the provider to say "running"
BOOTSTRAP_TIMEOUT = 1200
UPLOAD_FAILED = 96  # exit code of the bootstrap exec when unpacking failed, not the script
# Where a project's own bootstrap/ gets the packaged script (as $SWARM_DEFAULT_BOOTSTRAP), so
# it can run it and add its own steps rather than copy and maintain 400 lines.
DEFAULT_SCRIPT = "swarm-default-bootstrap.sh"


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


def check_bootstrap_dir(sess: Session) -> Path:
    """The project's bootstrap/, else (none there, and [bootstrap] dir not set elsewhere) the
    one swarm ships: an installed swarm needs no copy of it in every project."""
    cfg = sess.stack.config
    bdir = cfg.resolve(cfg.bootstrap.dir)
    if cfg.bootstrap.dir == BootstrapSection().dir and not bdir.exists():
        bdir = default_bootstrap_dir()
    script = bdir / cfg.bootstrap.script
    if sess.provider.runs_bootstrap and not script.is_file():
        raise UsageError(
            f"bootstrap script {script} not found: set [bootstrap] dir and script in swarm.toml"
        )
    return bdir


def up_master(sess: Session) -> UpResult:
    check_bootstrap_dir(sess)
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
    check_bootstrap_dir(sess)
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
    test = midrun.running_test(sess, master) if ready else None
    return midrun.join(sess, test, ready) if test is not None else []


def _leave_running_test(sess: Session, master: Node | None, nodes: list[Node]) -> list[Node]:
    test = midrun.running_test(sess, master) if master is not None else None
    return midrun.leave(sess, test, nodes) if test is not None else []


def _launch_and_bootstrap(sess: Session, role: Role, count: int, nodes: list[Node]) -> UpResult:
    if sess.provider.runs_bootstrap:  # offline: can the nodes be installed? before a launch
        cfg = sess.stack.config
        script = check_bootstrap_dir(sess) / cfg.bootstrap.script
        wheelhouse.check(cfg, locust_version(), script)
    with sess.report.phases() as board:
        result = UpResult(created=_launch(sess, role, count, nodes, board))
        if sess.provider.runs_bootstrap:
            master = next((x for x in nodes if x.role == Role.MASTER), None)
            relay_from = master if role == Role.WORKER else None
            result.bootstrap = bootstrap(sess, result.created, board, relay_from)
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


def bootstrap(
    sess: Session, nodes: list[Node], board: Board | None = None, master: Node | None = None
) -> list[HostResult]:
    """Ship bootstrap/ (one tar stream: from `master`'s relay where it can, else from here)
    and run its script on every node at once; each node's phase moves on `board` (running →
    bootstrapping → ready | failed). A master keeps the tar for the workers to come."""
    board = board or Board()
    cfg = sess.stack.config
    bdir = check_bootstrap_dir(sess)
    rd = sess.remote_dir
    env = {"SWARM_LOCUST_VERSION": locust_version(), "SWARM_STACK": sess.stack.name}
    if cfg.locust.otel:
        env["SWARM_LOCUST_EXTRAS"] = OTEL_EXTRA  # locust[otel]: the SDK and its exporters
    wheels = None
    if cfg.bootstrap.offline:
        env["SWARM_OFFLINE"] = "1"
        wheels = ship_wheels.Wheelhouses(cfg, env["SWARM_LOCUST_VERSION"], sess.report.info)
    script = shlex.quote(f"bootstrap/{cfg.bootstrap.script}")
    default = (default_bootstrap_dir() / "bootstrap.sh").read_bytes()
    # once: one tar per host was N x the CPU and memory
    payload = tar_bytes(bdir, extra={DEFAULT_SCRIPT: default})
    shipment = Shipment.of("bootstrap", payload)
    relays = shipping.can_relay(sess, master)
    unscheduled: list[str] = []
    reasons: dict[str, str] = {}  # node id -> the script's own last failure line

    def one(node: Node) -> str:
        r = sess.provider.runner(sess.stack, node)
        try:
            r.wait_ready(cfg.bootstrap.ssh_timeout, progress=sess.report.info)
            board.move(node.id, Phase.BOOTSTRAPPING, node.name or node.id)
            exports = " ".join(
                f"{k}={shlex.quote(v)}" for k, v in {**env, "SWARM_ROLE": str(node.role)}.items()
            )
            # One exec: unpack (from the relay, else from stdin), then run the script. $PWD:
            # rd may be relative to the login dir, and the script runs inside it.
            run_script = (
                f'cd {shlex.quote(rd)} && {exports} SWARM_REMOTE_DIR="$PWD" '
                f'SWARM_DEFAULT_BOOTSTRAP="$PWD/bootstrap/{DEFAULT_SCRIPT}" bash {script}'
            )
            keep = node.role == Role.MASTER and sess.provider.relays_trees
            direct = f"{receive_cmd(rd, shipment, store=keep)} || exit {UPLOAD_FAILED}; "

            def boot(tail: str, timeout: float) -> Result:
                if relay is not None and not fell_back:
                    res = r.run(
                        f"{relay.fetch} || exit {FETCH_FAILED}; {run_script}{tail}",
                        timeout=timeout,
                        check=False,
                        stdin=relay.stdin,
                    )
                    if res.exit_code != FETCH_FAILED:
                        return res
                    relay.miss(node)
                    fell_back.append(True)
                return r.run(
                    f"{direct}{run_script}{tail}", timeout=timeout, check=False, stdin=payload
                )

            fell_back: list[bool] = []
            if wheels is not None:
                # Offline: the script says which Python it would install with (and which
                # wheelhouse the node has) before the wheelhouse for it is sent.
                probe = boot(" --probe", 120)
                _check_unpacked(probe, rd)
                if not probe.ok:
                    why = reasons[node.id] = _reason(probe.stdout)
                    raise RemoteError(
                        f"bootstrap failed (exit {probe.exit_code}): {why or probe.tail(3)}"
                    )
                wheels.ship(
                    r,
                    wheelhouse.parse_probe(probe.stdout),
                    rd,
                    keep=keep,
                    relay=None if fell_back else relay,
                    master=mr,
                )
            res = boot(" >bootstrap.log 2>&1", BOOTSTRAP_TIMEOUT)
            _check_unpacked(res, rd)
            if not res.ok:
                tail = r.run(f"tail -n 15 {shlex.quote(rd)}/bootstrap.log", timeout=30, check=False)
                lines = tail.stdout.strip().replace("\n", "\n    ")
                why = reasons[node.id] = _reason(tail.stdout)
                raise RemoteError(
                    f"bootstrap failed (exit {res.exit_code}){why and ': ' + why}; last lines "
                    f"of {rd}/bootstrap.log:\n    {lines}"
                )
            # User data schedules the power-off at boot; make sure it did (else do it now).
            warning = expiry.ensure_scheduled(r, node)
            if warning:
                unscheduled.append(warning)
            # (Re)start the host's warm Locust, which imports Locust for the next `run`, once
            # swarm has exited (closing the runner is not the signal): where hosts share CPUs
            # (VMs on one machine, the lab), 30 imports would slow by seconds the bootstraps,
            # API calls and exit still to come.
            try:
                r.run_after_exit(warm_restart_cmd(rd))
            except RemoteError:
                pass  # only a head start: `run` starts Locust cold and a warm one then
            board.move(node.id, Phase.READY)
            return "bootstrapped"
        except BaseException as exc:
            board.fail(node.id, exc)
            raise
        finally:
            r.close()

    sess.report.info(f"bootstrapping {len(nodes)} node(s)")
    relay = mr = None
    if relays and master is not None and nodes:
        mr = sess.provider.runner(sess.stack, master)
        try:
            state = shipping.master_state(mr, rd, shipment.tree)
            life = cfg.bootstrap.ssh_timeout + shipping.RELAY_LIFE
            fetches = len(nodes) * (2 if wheels is not None else 1)  # bootstrap/, wheelhouse
            relay = shipping.open_relay(sess, master, mr, shipment, state, fetches, life=life)
        except RemoteError as e:
            sess.report.info(
                f"the master did not take {shipment.tree}/ ({e}): sending it from here"
            )
    try:
        results = fan_out(nodes, one, what="bootstrap", raise_on_error=False)
    finally:
        if mr is not None:
            if relay is not None:
                shipping.close_relay(mr, relay)
            mr.close()
    if relay is not None and relay.missed:
        sess.report.info(relay.missed_line(len(nodes)))
    if wheels is not None and wheels.summary():
        sess.report.info(wheels.summary())
    for warning in unscheduled:
        sess.report.warn(warning)
    return [replace(r, reason=reasons.get(r.node.id, "")) for r in results]


# What bootstrap.sh's die() writes before the reason: the log's last such line says why.
FAILED_MARK = "bootstrap FAILED: "


def _check_unpacked(res: Result, rd: str) -> None:
    if res.exit_code == UPLOAD_FAILED:
        raise RemoteError(
            f"unpacking bootstrap/ in {rd} failed: "
            f"{res.stderr.strip().splitlines()[-1:] or 'no output'}"
        )


def _reason(log: str) -> str:
    """<why> from the script's own last failure line, so the reason leads the message."""
    for line in reversed(log.splitlines()):
        if FAILED_MARK in line:
            return line.split(FAILED_MARK, 1)[1].strip()
    return ""


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
