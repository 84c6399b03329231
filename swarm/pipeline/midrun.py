"""Workers joining a test that is running (`swarm up workers -n N` while `swarm run` follows
it, perhaps from another machine); leaving one is leaving.py.

The master's Locust runs with --enable-rebalancing: it hands users to a worker that connects
and takes them back from one that quits. Here a joiner gets the run's own locustfiles (the
master's copy, relayed by the master as `run` shipped it: the controller's may have changed
since) and the run's worker command line. Each move is appended to the run's roster on the
master, which `swarm run` reads with every poll (runners for joiners; leavers neither missing
nor waited on) and `swarm status` shows.
"""

from __future__ import annotations

import shlex
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from swarm.errors import RemoteError, SwarmError
from swarm.locust import roster
from swarm.locust.live import MasterStats, RunMeta, master_stats_probe
from swarm.locust.roster import Move, RosterEntry
from swarm.locust.shell import HostFacts, env_file, kill_cmd, start_cmd, stop_probe
from swarm.models import Node
from swarm.pipeline import shipping
from swarm.pipeline.plan import locust_env
from swarm.pipeline.session import Session
from swarm.remote.base import Runner, pack_tree_cmd, replace_tree_cmd
from swarm.remote.fanout import fan_out
from swarm.remote.ship import FETCH_FAILED, Shipment

LOCUSTFILES = "locustfiles"  # the shipped tree under the remote dir
JOIN_TIMEOUT_S = 60  # for a joiner's processes to connect to the master
POLL_S = 0.5
ASK_ATTEMPTS = 2


@dataclass(frozen=True)
class RunningTest:
    """A test running on the stack's master, as `up` / `down` find it."""

    master: Node
    meta: RunMeta  # as it started
    entries: list[RosterEntry]  # who joined and left since

    @property
    def now(self) -> RunMeta:
        return self.meta.with_roster(self.entries)


@dataclass(frozen=True)
class Joined:
    node: Node
    processes: int


def running_test(sess: Session, master: Node, meanwhile: str) -> RunningTest | None:
    """The test the master's Locust runs, if it runs one this swarm can join (its meta names
    the worker command line); a master that does not answer (asked twice: a busy one may be
    slow to log in) runs none we can act on, and the user is told. `meanwhile`: what becomes
    of the workers when the run is still starting (the user is told that too)."""
    stats = None
    for attempt in range(ASK_ATTEMPTS):
        r = sess.provider.runner(sess.stack, master)
        try:
            stats = _stats(sess, r)
            break
        except SwarmError as e:
            if attempt + 1 == ASK_ATTEMPTS:
                sess.report.warn(
                    f"could not ask the master whether a test runs ({e}): if one does, "
                    "these workers neither join nor leave it"
                )
                return None
        finally:
            r.close()
    if stats is None or not stats.running:
        return None
    if not stats.meta.worker_argv:
        # A run's start removes the details of the last one, and writes its own once the
        # workers it listed have started: in between nothing says how to join it.
        sess.report.warn(
            "the master's Locust is starting a run (`swarm run` has not said its details "
            f"yet): these workers neither join nor leave it; {meanwhile}"
        )
        return None
    return RunningTest(master, stats.meta, stats.roster)


def _stats(sess: Session, r: Runner) -> MasterStats:
    probe = master_stats_probe(sess.remote_dir, sess.ports.web)
    return probe.parse(r.run(probe.command, timeout=20, check=False).stdout)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def join(sess: Session, test: RunningTest, nodes: list[Node]) -> list[Joined]:
    """Start a Locust worker of the running test on each (bootstrapped) node; -> those that
    connected to the master within JOIN_TIMEOUT_S (the others are named in a warning)."""
    rd, meta = sess.remote_dir, test.meta
    mr = sess.provider.runner(sess.stack, test.master)
    relay = None
    try:
        stop = stop_probe(rd)
        relay = _open_relay(sess, test.master, mr, len(nodes))
        files = _MastersCopy(mr, rd)
        env = locust_env(sess, sess.stack.config.profiles.get(meta.profile or ""))
        env_bytes = env_file(env) if env else None
        argv_cmd = start_cmd(
            rd, meta.worker_argv, warm=sess.provider.runs_bootstrap, env=env_bytes is not None
        )

        def start_one(node: Node) -> HostFacts:
            r = sess.provider.runner(sess.stack, node)
            try:
                facts = None
                if relay is not None:
                    # from the master, inside the network: nothing crosses the controller's link
                    got = r.run(
                        f"{relay.fetch} && {stop.command}",
                        timeout=relay.timeout + 60,
                        stdin=relay.stdin,
                        check=False,
                    )
                    if got.ok:
                        facts = stop.parse(got.stdout)
                    elif got.exit_code != FETCH_FAILED:
                        raise RemoteError(f"{got.tail(3) or f'exit {got.exit_code}'}")
                    else:
                        relay.miss(node)
                if facts is None:
                    sync = f"{replace_tree_cmd(f'{rd}/locustfiles')} && {stop.command}"
                    facts = stop.parse(r.run(sync, timeout=120, stdin=files.tar()).stdout)
                r.run(argv_cmd, timeout=60, stdin=env_bytes)
                return facts
            finally:
                r.close()

        started = fan_out(nodes, start_one, what="join", raise_on_error=False)
        if relay is not None:
            shipping.close_relay(mr, relay)
            if relay.missed:
                sess.report.info(relay.missed_line(len(nodes)))
            relay = None
        for res in started:
            if not res.ok:
                sess.report.warn(f"{res.node.name} could not join the running test: {res.error}")
        facts = {res.node.name: res.value for res in started if res.ok}
        want = {
            name: (f.nproc if meta.per_worker == -1 else meta.per_worker)
            for name, f in facts.items()
        }
        connected = _wait_connected(sess, mr, {n: facts[n].hostname for n in want}, want)
        joined = [Joined(n, want[n.name]) for n in nodes if n.name in connected]
        if joined:
            at = now()
            entries = [
                RosterEntry(Move.JOINED, j.node.name, at, j.processes, facts[j.node.name].hostname)
                for j in joined
            ]
            mr.run(f"cd {shlex.quote(rd)} && {roster.append_cmd(entries)}", timeout=30)
        late = [n for n in nodes if n.name in set(want) - connected]
        if late:
            # not part of the run: a worker retrying to reach a master that may be gone
            fan_out(late, lambda n: _stop_locust(sess, n), what="stop", raise_on_error=False)
        for n in late:
            sess.report.warn(
                f"{n.name} did not join the running test within {JOIN_TIMEOUT_S}s (it ended, "
                "or the worker could not reach the master): see `swarm logs`"
            )
        for j in joined:
            s = "es" if j.processes != 1 else ""
            sess.report.info(f"joined the running test: {j.node.name} ({j.processes} process{s})")
        return joined
    finally:
        if relay is not None:
            shipping.close_relay(mr, relay)
        mr.close()


def _open_relay(sess: Session, master: Node, mr: Runner, count: int) -> shipping.Relay | None:
    """The master's relay of the tar it stored at the run's start, when that is the tree the
    run unpacked (the run's files, not the controller's now); None: sent through here."""
    if not shipping.can_relay(sess, master):
        return None
    state = shipping.master_state(mr, sess.remote_dir, LOCUSTFILES)
    if not state.stored or state.stored != state.unpacked or not state.stored_sha:
        return None
    # nothing to send (the master has it): the tar itself is needed only for a fallback
    shipment = Shipment(LOCUSTFILES, b"", state.stored, state.stored_sha)
    return shipping.open_relay(sess, master, mr, shipment, state, count)


class _MastersCopy:
    """The run's locustfiles as the master has them, fetched through here once, and only for
    a worker the relay did not reach (or where there is no relay)."""

    def __init__(self, mr: Runner, rd: str):
        self._mr, self._rd = mr, rd
        self._tar: bytes | None = None
        self._lock = threading.Lock()

    def tar(self) -> bytes:
        with self._lock:
            if self._tar is None:
                self._tar = self._mr.run_bytes(
                    pack_tree_cmd(f"{self._rd}/{LOCUSTFILES}"), timeout=120
                )
            return self._tar


def _wait_connected(
    sess: Session, mr: Runner, hostnames: dict[str, str], want: dict[str, int]
) -> set[str]:
    """Nodes whose worker processes are all connected to the master (Locust names each
    '<hostname>_<uuid>'), polled on the master, bounded; stops early if the run ends."""
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    done: set[str] = set()
    for _ in range(int(JOIN_TIMEOUT_S / POLL_S) + 2):
        stats = _stats(sess, mr)
        ids = [str(w.get("id", "")) for w in stats.api.get("workers", [])]
        for name, host in hostnames.items():
            if sum(1 for i in ids if i.rsplit("_", 1)[0] == host) >= want[name]:
                done.add(name)
        if len(done) == len(hostnames) or not stats.running or time.monotonic() > deadline:
            break
        time.sleep(POLL_S)
    return done


def _stop_locust(sess: Session, node: Node) -> None:
    r = sess.provider.runner(sess.stack, node)
    try:
        r.run(f"{kill_cmd(sess.remote_dir)} >/dev/null", timeout=60)
    finally:
        r.close()
