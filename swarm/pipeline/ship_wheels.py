"""Sending each node the wheelhouse it lacks, in one bootstrap's fan-out (offline installs;
making and caching the wheelhouses is wheelhouse.py): the master's from here, kept there as a
tar; the workers' from the master's relay, which serves the first target a worker asks for
(sent to the master first if it keeps another); any other, or a worker the relay cannot
reach, from here.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from swarm.config import Config
from swarm.errors import RemoteError
from swarm.pipeline.shipping import Relay, master_state
from swarm.pipeline.wheelhouse import MANIFEST, NodeFacts, Target, build, manifest
from swarm.remote.base import Runner, replace_tree_cmd, tar_bytes
from swarm.remote.ship import FETCH_FAILED, Shipment, fetch_timeout, receive_cmd

TREE = "wheelhouse"  # under the remote dir; the master keeps its tar for the relay
SHIP_TIMEOUT = 600


class Wheelhouses:
    """The wheelhouses of one bootstrap: each made once (threads of the fan-out share it),
    each sent to a node only when it lacks that digest."""

    def __init__(self, cfg: Config, version: str, info: Callable[[str], None]):
        self.version = version
        self.otel = cfg.locust.otel
        self.info = info
        self.given = cfg.resolve(cfg.bootstrap.wheelhouse) if cfg.bootstrap.wheelhouse else None
        self._lock = threading.Lock()
        self._made: dict[str, Shipment] = {}  # target key ("given") -> its wheelhouse
        self.shipped: list[float] = []  # seconds per node sent one from here
        self.relayed: list[float] = []  # seconds per node that fetched it from the relay
        self.present = 0
        self._relayed_key: str | None = None  # the target whose wheelhouse the relay serves
        self._asked = False  # whether the master was asked for its stored wheelhouse
        self._served: Shipment | None = None  # what its relay serves
        self.to_master = False  # this command sent it to the master for the relay

    def _get(self, target: Target) -> Shipment:
        """The target's wheelhouse as this command sends it (made or found once)."""
        key = "given" if self.given else target.key
        with self._lock:
            if key not in self._made:
                if self.given:
                    text = manifest(self.given)
                    tar = tar_bytes(self.given, level=0, extra={MANIFEST: text.encode()})
                else:
                    started = time.monotonic()
                    path, made = build(self.version, target, self.otel)
                    text = (path / MANIFEST).read_text()
                    size = sum(f.stat().st_size for f in path.glob("*.whl"))
                    took = f" in {time.monotonic() - started:.1f}s" if made else ""
                    self.info(
                        f"{'made' if made else 'using'} the wheelhouse for {target.key}"
                        f" ({len(text.splitlines()) - 1} wheels, {size / 1e6:.0f} MB){took}: {path}"
                    )
                    tar = tar_bytes(path, level=0)
                # the manifest's digest names the tree (its first line)
                digest = text.split("\n", 1)[0]
                self._made[key] = Shipment(TREE, tar, digest, hashlib.sha256(tar).hexdigest())
            return self._made[key]

    def ship(
        self,
        runner: Runner,
        facts: NodeFacts,
        remote_dir: str,
        *,
        keep: bool = False,
        relay: Relay | None = None,
        master: Runner | None = None,
    ) -> None:
        """The node's wheelhouse, unless it has it: `keep` (the master) stores the tar for the
        relay too; with `relay` (a worker) it comes from the relay of `master`, which gets
        it first if its stored copy differs (once per command), else from here."""
        s = self._get(facts.target)
        if facts.shipped == s.digest:
            with self._lock:
                self.present += 1
            return
        started = time.monotonic()
        served = None
        if relay is not None and master is not None:
            served = self._on_master(master, remote_dir, facts, s)
        if relay is not None and served is not None:
            res = runner.run(
                relay.fetch_of(served),
                timeout=fetch_timeout(len(s.tar)) + 30,
                stdin=relay.stdin,
                check=False,
            )
            if res.ok:
                with self._lock:
                    self.relayed.append(time.monotonic() - started)
                return
            if res.exit_code != FETCH_FAILED:
                raise RemoteError(f"unpacking the wheelhouse failed: {res.tail(3)}")
        cmd = (
            receive_cmd(remote_dir, s, store=True)
            if keep
            else replace_tree_cmd(f"{remote_dir}/{TREE}")
        )
        runner.run(cmd, timeout=SHIP_TIMEOUT, stdin=s.tar)
        with self._lock:
            self.shipped.append(time.monotonic() - started)

    def _on_master(self, master: Runner, rd: str, facts: NodeFacts, s: Shipment) -> Shipment | None:
        """The wheelhouse as the master's relay serves it (its bytes' sha256 may differ from
        ours: gzip writes a time), sent there first if it stores another, once, under the lock
        (the other workers wait for it); for the first target a worker asks for, else None."""
        with self._lock:
            if self._relayed_key is None:
                self._relayed_key = facts.target.key
            if self._relayed_key != facts.target.key:
                return None
            if not self._asked:
                self._asked = True
                try:
                    have = master_state(master, rd, TREE)
                    if have.stored == s.digest and have.stored_sha:
                        self._served = replace(s, sha=have.stored_sha)
                    else:
                        master.run(
                            receive_cmd(rd, s, unpack=False, store=True),
                            timeout=SHIP_TIMEOUT,
                            stdin=s.tar,
                        )
                        self.to_master, self._served = True, s
                except RemoteError as e:
                    self.info(f"the master did not take the wheelhouse ({e}): sending it from here")
            return self._served

    def summary(self) -> str:
        """One line for the whole fan-out (not one per node)."""
        if not self.shipped and not self.relayed:
            return (
                f"the wheelhouse was on all {self.present} node(s) already" if self.present else ""
            )
        size = max(len(s.tar) for s in self._made.values()) / 1e6
        parts = []
        if self.shipped:
            parts.append(
                f"sent the wheelhouse ({size:.0f} MB) to {len(self.shipped)} node(s) "
                f"in {max(self.shipped):.1f}s"
            )
        if self.relayed:
            n, took = len(self.relayed), f"in {max(self.relayed):.1f}s"
            if self.to_master:
                got = f"sent the wheelhouse ({size:.0f} MB) to the master once: {n} node(s) got it"
                parts.append(f"{got} from its relay {took}")
            else:
                parts.append(
                    f"{n} node(s) got the wheelhouse ({size:.0f} MB) from the master's relay {took}"
                )
        if self.present:
            parts.append(f"{self.present} had it already")
        return "; ".join(parts)
