"""Bootstrapping nodes: bootstrap/ shipped once (from the master's relay where it can), its
script run on every node at once, the power-off checked, the warm Locust restarted."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path

from swarm.config.schema import BootstrapSection
from swarm.errors import RemoteError, UsageError
from swarm.locust.shell import warm_restart_cmd
from swarm.models import HostResult, Node, Role
from swarm.paths import default_bootstrap_dir
from swarm.pipeline import expiry, ship_wheels, shipping, wheelhouse
from swarm.pipeline.progress import Board, Phase
from swarm.pipeline.session import OTEL_EXTRA, Session, locust_version
from swarm.remote.base import Result, Runner, tar_bytes
from swarm.remote.fanout import fan_out
from swarm.remote.ship import FETCH_FAILED, Shipment, receive_cmd

TIMEOUT = 1200  # seconds for the script on one node
UPLOAD_FAILED = 96  # exit code of the bootstrap exec when unpacking failed, not the script
# Where a project's own bootstrap/ gets the packaged script (as $SWARM_DEFAULT_BOOTSTRAP), so
# it can run it and add its own steps rather than copy and maintain 400 lines.
DEFAULT_SCRIPT = "swarm-default-bootstrap.sh"
# What bootstrap.sh's die() writes before the reason: the log's last such line says why.
FAILED_MARK = "bootstrap FAILED: "


def check_dir(sess: Session) -> Path:
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


def check_offline(sess: Session) -> None:
    """Offline: can the nodes be installed? Before anything is launched."""
    cfg = sess.stack.config
    wheelhouse.check(cfg, locust_version(), check_dir(sess) / cfg.bootstrap.script)


def run(
    sess: Session, nodes: list[Node], board: Board | None = None, master: Node | None = None
) -> list[HostResult]:
    """Ship bootstrap/ (one tar stream: from `master`'s relay where it can, else from here)
    and run its script on every node at once; each node's phase moves on `board` (running →
    bootstrapping → ready | failed). A master keeps the tar for the workers to come."""
    job = _Job.of(sess, board or Board())
    sess.report.info(f"bootstrapping {len(nodes)} node(s)")
    if master is not None and nodes and shipping.can_relay(sess, master):
        job.open_relay(master, len(nodes))
    try:
        results = fan_out(nodes, job.one, what="bootstrap", raise_on_error=False)
    finally:
        job.close_relay()
    if job.relay is not None and job.relay.missed:
        sess.report.info(job.relay.missed_line(len(nodes)))
    if job.wheels is not None and job.wheels.summary():
        sess.report.info(job.wheels.summary())
    for warning in job.unscheduled:
        sess.report.warn(warning)
    return [replace(r, reason=job.reasons.get(r.node.id, "")) for r in results]


@dataclass
class _Job:
    """One bootstrap of many nodes: what every node gets, and what they said."""

    sess: Session
    board: Board
    env: dict[str, str]
    payload: bytes  # the tar of bootstrap/, made once: one per host was N x the CPU and memory
    shipment: Shipment
    wheels: ship_wheels.Wheelhouses | None  # offline installs only
    relay: shipping.Relay | None = None
    master_runner: Runner | None = None
    unscheduled: list[str] = field(default_factory=list)  # power-offs not scheduled
    reasons: dict[str, str] = field(default_factory=dict)  # node id -> the script's last "why"

    @classmethod
    def of(cls, sess: Session, board: Board) -> _Job:
        cfg = sess.stack.config
        env = {"SWARM_LOCUST_VERSION": locust_version(), "SWARM_STACK": sess.stack.name}
        if cfg.locust.otel:
            env["SWARM_LOCUST_EXTRAS"] = OTEL_EXTRA  # locust[otel]: the SDK and its exporters
        wheels = None
        if cfg.bootstrap.offline:
            env["SWARM_OFFLINE"] = "1"
            wheels = ship_wheels.Wheelhouses(cfg, env["SWARM_LOCUST_VERSION"], sess.report.info)
        default = (default_bootstrap_dir() / "bootstrap.sh").read_bytes()
        payload = tar_bytes(check_dir(sess), extra={DEFAULT_SCRIPT: default})
        return cls(sess, board, env, payload, Shipment.of("bootstrap", payload), wheels)

    def open_relay(self, master: Node, count: int) -> None:
        sess, shipment = self.sess, self.shipment
        mr = self.master_runner = sess.provider.runner(sess.stack, master)
        try:
            state = shipping.master_state(mr, sess.remote_dir, shipment.tree)
            life = sess.stack.config.bootstrap.ssh_timeout + shipping.RELAY_LIFE
            fetches = count * (2 if self.wheels is not None else 1)  # bootstrap/, wheelhouse
            self.relay = shipping.open_relay(sess, master, mr, shipment, state, fetches, life=life)
        except RemoteError as e:
            sess.report.info(
                f"the master did not take {shipment.tree}/ ({e}): sending it from here"
            )

    def close_relay(self) -> None:
        if self.master_runner is not None:
            if self.relay is not None:
                shipping.close_relay(self.master_runner, self.relay)
            self.master_runner.close()

    def one(self, node: Node) -> str:
        sess, cfg = self.sess, self.sess.stack.config
        r = sess.provider.runner(sess.stack, node)
        try:
            r.wait_ready(cfg.bootstrap.ssh_timeout, progress=sess.report.info)
            self.board.move(node.id, Phase.BOOTSTRAPPING, node.name or node.id)
            boot = _Exec(self, node, r)
            if self.wheels is not None:
                # Offline: the script says which Python it would install with (and which
                # wheelhouse the node has) before the wheelhouse for it is sent.
                probe = boot(" --probe", 120)
                if not probe.ok:
                    why = self.reasons[node.id] = _reason(probe.stdout)
                    raise RemoteError(
                        f"bootstrap failed (exit {probe.exit_code}): {why or probe.tail(3)}"
                    )
                self.wheels.ship(
                    r,
                    wheelhouse.parse_probe(probe.stdout),
                    sess.remote_dir,
                    keep=boot.keep,
                    relay=None if boot.fell_back else self.relay,
                    master=self.master_runner,
                )
            res = boot(" >bootstrap.log 2>&1", TIMEOUT)
            if not res.ok:
                raise self._failed(node, r, res)
            # User data schedules the power-off at boot; make sure it did (else do it now).
            warning = expiry.ensure_scheduled(r, node)
            if warning:
                self.unscheduled.append(warning)
            # (Re)start the host's warm Locust, which imports Locust for the next `run`, once
            # swarm has exited (closing the runner is not the signal): where hosts share CPUs
            # (VMs on one machine, the lab), 30 imports would slow by seconds the bootstraps,
            # API calls and exit still to come.
            try:
                r.run_after_exit(warm_restart_cmd(sess.remote_dir))
            except RemoteError:
                pass  # only a head start: `run` starts Locust cold and a warm one then
            self.board.move(node.id, Phase.READY)
            return "bootstrapped"
        except BaseException as exc:
            self.board.fail(node.id, exc)
            raise
        finally:
            r.close()

    def _failed(self, node: Node, r: Runner, res: Result) -> RemoteError:
        rd = self.sess.remote_dir
        tail = r.run(f"tail -n 15 {shlex.quote(rd)}/bootstrap.log", timeout=30, check=False)
        lines = tail.stdout.strip().replace("\n", "\n    ")
        why = self.reasons[node.id] = _reason(tail.stdout)
        return RemoteError(
            f"bootstrap failed (exit {res.exit_code}){why and ': ' + why}; last lines "
            f"of {rd}/bootstrap.log:\n    {lines}"
        )


class _Exec:
    """A node's bootstrap exec: unpack (from the relay, else from stdin), then run the script,
    in one exec. Once the relay missed this node, from stdin."""

    def __init__(self, job: _Job, node: Node, runner: Runner) -> None:
        sess = job.sess
        cfg = sess.stack.config
        rd = sess.remote_dir
        self.job, self.runner = job, runner
        self.fell_back = False
        exports = " ".join(
            f"{k}={shlex.quote(v)}" for k, v in {**job.env, "SWARM_ROLE": str(node.role)}.items()
        )
        script = shlex.quote(f"bootstrap/{cfg.bootstrap.script}")
        # $PWD: rd may be relative to the login dir, and the script runs inside it
        self.script = (
            f'cd {shlex.quote(rd)} && {exports} SWARM_REMOTE_DIR="$PWD" '
            f'SWARM_DEFAULT_BOOTSTRAP="$PWD/bootstrap/{DEFAULT_SCRIPT}" bash {script}'
        )
        self.keep = node.role == Role.MASTER and sess.provider.relays_trees
        self.direct = f"{receive_cmd(rd, job.shipment, store=self.keep)} || exit {UPLOAD_FAILED}; "
        self.node = node

    def __call__(self, tail: str, timeout: float) -> Result:
        relay, r = self.job.relay, self.runner
        res = None
        if relay is not None and not self.fell_back:
            res = r.run(
                f"{relay.fetch} || exit {FETCH_FAILED}; {self.script}{tail}",
                timeout=timeout,
                check=False,
                stdin=relay.stdin,
            )
            if res.exit_code == FETCH_FAILED:
                relay.miss(self.node)
                self.fell_back = True
                res = None
        if res is None:
            res = r.run(
                f"{self.direct}{self.script}{tail}",
                timeout=timeout,
                check=False,
                stdin=self.job.payload,
            )
        if res.exit_code == UPLOAD_FAILED:
            rd = self.job.sess.remote_dir
            raise RemoteError(
                f"unpacking bootstrap/ in {rd} failed: "
                f"{res.stderr.strip().splitlines()[-1:] or 'no output'}"
            )
        return res


def _reason(log: str) -> str:
    """<why> from the script's own last failure line, so the reason leads the message."""
    for line in reversed(log.splitlines()):
        if FAILED_MARK in line:
            return line.split(FAILED_MARK, 1)[1].strip()
    return ""
