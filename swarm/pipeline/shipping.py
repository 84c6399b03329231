"""A tree crosses the controller's link at most once per command: to the master, whose relay
hands it to the workers over the private network; a worker that cannot reach the relay gets it
from here, and the command says so in one line. Unchanged trees are not sent at all.

The shell and its parsers are in swarm/remote/ship.py; this module knows the order.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from swarm.errors import RemoteError
from swarm.models import HostResult, Node
from swarm.pipeline.session import Session
from swarm.remote.base import Result, Runner
from swarm.remote.fanout import fan_out
from swarm.remote.ship import (
    FETCH_FAILED,
    Shipment,
    ShipState,
    fetch_cmd,
    fetch_timeout,
    parse_relay,
    receive_cmd,
    relay_cmd,
    state_probe,
    stop_relay_cmd,
    with_token_first,
)

RELAY_LIFE = 120  # seconds the relay serves, beyond the workers' wait for SSH
SEND_TIMEOUT = 300
SHIPPED = "swarm-shipped"


def can_relay(sess: Session, master: Node | None) -> bool:
    return master is not None and sess.provider.relays_trees and bool(master.private_ip)


@dataclass
class Relay:
    """The master's relay for one tree, as the workers fetch from it."""

    rd: str
    shipment: Shipment
    addr: str
    port: int
    sha: str  # of the bytes the master serves
    pid: int
    token: str = field(repr=False)
    missed: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def fetch(self) -> str:
        return fetch_cmd(self.rd, self.shipment, self.sha, self.addr, self.port)

    def fetch_of(self, s: Shipment) -> str:
        """The fetch of another tree the master stores (the wheelhouse), from this relay."""
        return fetch_cmd(self.rd, s, s.sha, self.addr, self.port)

    @property
    def stdin(self) -> bytes:
        return f"{self.token}\n".encode()

    @property
    def timeout(self) -> float:
        return fetch_timeout(len(self.shipment.tar)) + 30

    def miss(self, node: Node) -> None:
        with self._lock:
            self.missed.append(node.name or node.id)

    def missed_line(self, of: int) -> str:
        return (
            f"{len(self.missed)} of {of} workers could not reach the master's relay at "
            f"{self.addr}:{self.port}: sent from here"
        )


def master_state(runner: Runner, rd: str, tree: str) -> ShipState:
    probe = state_probe(rd, tree)
    return probe.parse(runner.run(probe.command, timeout=60, check=False).stdout)


def open_relay(
    sess: Session,
    master: Node,
    runner: Runner,
    s: Shipment,
    state: ShipState,
    count: int,
    *,
    unpack: bool = False,
    life: float = RELAY_LIFE,
) -> Relay | None:
    """One exec on the master: send it the tree if its stored copy differs (and unpack it
    there too, `unpack`), then start the relay for `count` workers. None, said in one line,
    when the relay did not start; RemoteError when the master did not take the tree."""
    rd = sess.remote_dir
    send_unpack = unpack and state.unpacked != s.digest
    send_store = state.stored != s.digest or not state.stored_sha
    head = "true"
    if send_unpack or send_store:
        head = f"{receive_cmd(rd, s, unpack=send_unpack, store=send_store)} && echo {SHIPPED}"
    token = secrets.token_hex(16)
    port = sess.ports.port + 1
    addr = master.private_ip or ""
    stdin = f"{token}\n".encode() + (s.tar if head != "true" else b"")
    cmd = with_token_first(head, relay_cmd(rd, s.tree, addr, port, count, life))
    res = runner.run(cmd, timeout=SEND_TIMEOUT, stdin=stdin, check=False)
    if head != "true" and SHIPPED not in res.stdout:
        raise RemoteError(
            f"{master.name}: sending {s.tree}/ failed (exit {res.exit_code}): "
            f"{res.tail(3) or 'no output'}"
        )
    pid = parse_relay(res.stdout)
    if pid is None:
        why = res.tail(1) or f"exit {res.exit_code}"
        sess.report.info(
            f"the master's relay at {addr}:{port} did not start ({why}): "
            f"sending {s.tree}/ to each worker from here"
        )
        return None
    return Relay(rd, s, addr, port, s.sha if send_store else state.stored_sha, pid, token)


def _then_ran(node: Node, res: Result, then: bool) -> Then | None:
    """The tree got there (else RemoteError); what `then` did, if there was one."""
    before, mark, after = res.stdout.partition(f"{UNPACKED}\n")
    if then and mark:
        return Then(res.exit_code, after, res.tail(3))
    if res.ok and not then:
        return None
    raise RemoteError(f"{node.name}: {res.tail(3) or f'exit {res.exit_code}'}")


def close_relay(runner: Runner, relay: Relay) -> None:
    """The relay exits by itself once every worker fetched or its time is up; this ends it
    now (a worker fell back, or failed before fetching)."""
    try:
        runner.run(stop_relay_cmd(relay.rd, relay.shipment.tree, relay.pid), timeout=30)
    except RemoteError:
        pass  # it ends within RELAY_LIFE anyway


@dataclass(frozen=True)
class Then:
    """What `then` did, run in the same exec once the tree was unpacked."""

    exit_code: int
    stdout: str  # after the tree was unpacked
    tail: str  # the exec's last lines (stderr first), to say why it failed


UNPACKED = "swarm-unpacked"


def spread(
    sess: Session,
    s: Shipment,
    master: Node,
    state: ShipState,
    workers: list[Node],
    runner_of: Callable[[Node], Runner],
    then: Callable[[Node], str] | None = None,
    *,
    through_relay: bool = True,
) -> list[HostResult]:
    """The tree onto the master (when its copy differs) and onto `workers` (those whose copy
    differs), through the master's relay where there is one (and `through_relay`: not for
    workers a relay missed already) -> one result per worker. `then(node)`: a command (reading
    no stdin) run in the same exec once the tree is there, a worker's start: each result's
    value is then a Then."""
    rd = sess.remote_dir
    mr = runner_of(master)
    relay = None
    if workers and through_relay and can_relay(sess, master):
        relay = open_relay(sess, master, mr, s, state, len(workers), unpack=True)
    elif state.unpacked != s.digest:
        store = can_relay(sess, master)  # for the workers a later command adds
        mr.run(receive_cmd(rd, s, store=store), timeout=SEND_TIMEOUT, stdin=s.tar)

    def one(node: Node) -> Then | None:
        r = runner_of(node)
        # the fetch's own exit code kept: FETCH_FAILED (the relay was out of reach) or another
        after = f'; c=$?; [ "$c" = 0 ] || exit "$c"; echo {UNPACKED}; {then(node)}' if then else ""
        if relay is not None:
            res = r.run(
                f"{relay.fetch}{after}",
                timeout=relay.timeout,
                stdin=relay.stdin,
                check=False,
            )
            if res.exit_code != FETCH_FAILED:
                return _then_ran(node, res, then is not None)
            relay.miss(node)
        if then is None:
            r.run(receive_cmd(rd, s), timeout=SEND_TIMEOUT, stdin=s.tar)
            return None
        res = r.run(f"{receive_cmd(rd, s)}{after}", timeout=SEND_TIMEOUT, stdin=s.tar, check=False)
        return _then_ran(node, res, True)

    try:
        results = fan_out(workers, one, what=f"send {s.tree}/", raise_on_error=False)
    finally:
        if relay is not None:
            close_relay(mr, relay)
    if relay is not None and relay.missed:
        sess.report.info(relay.missed_line(len(workers)))
    return results
