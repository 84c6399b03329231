"""Workers leaving a test that is running (`swarm down workers`, a smaller `-n`, while
`swarm run` follows it, perhaps from another machine).

The master's Locust runs with --enable-rebalancing: it takes the users back from a worker
that quits. Here a leaver is taken out of the run's roster first (so `swarm run` never counts
it missing), its Locust is stopped gracefully (SIGTERM: it tells the master it quits) before
its machine goes, and its Locust log (its end, capped) is kept on the master, where the run's
end-of-run fetch finds it (`run` cannot: the machine is gone by then).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from swarm.errors import SwarmError
from swarm.locust import roster
from swarm.locust.argv import RESULTS_DIR
from swarm.locust.roster import Move, RosterEntry
from swarm.locust.shell import kill_cmd
from swarm.models import Node
from swarm.pipeline import midrun
from swarm.pipeline.fetch import LEFT_LOGS
from swarm.pipeline.midrun import RunningTest
from swarm.pipeline.session import Session
from swarm.remote.base import Runner, tar_bytes
from swarm.remote.fanout import fan_out

# A leaver's log is read through here and written to the master while `down` waits: its end
# is kept (where a worker says why it stopped), never more than this
LOG_CAP = 1 << 20
KEEP_TIMEOUT_S = 60


def leave(sess: Session, test: RunningTest, nodes: list[Node]) -> list[Node]:
    """Take nodes out of the running test: in the roster first (so `swarm run` never counts
    them missing), then their Locust stopped by SIGTERM (it tells the master it quits; the
    master moves its users), bounded, KILL after; then their logs kept on the master.
    -> the nodes that took part."""
    taking = test.now.processes
    leaving = [n for n in nodes if n.name in taking]
    if not leaving:
        return []
    rd = sess.remote_dir
    at = midrun.now()
    entries = [RosterEntry(Move.LEFT, n.name, at, taking[n.name]) for n in leaving]
    mr = sess.provider.runner(sess.stack, test.master)
    try:
        mr.run(f"cd {shlex.quote(rd)} && {roster.append_cmd(entries)}", timeout=30)

        stopped = fan_out(
            leaving,
            lambda n: _stop_and_read_log(sess, n),
            what="leave",
            raise_on_error=False,
        )
        logs: dict[str, bytes] = {}
        for res in stopped:
            if res.ok:
                sess.report.info(f"left the running test: {res.node.name}")
                log: LeaverLog | None = res.value
                if log is None:
                    sess.report.warn(f"{res.node.name} had no Locust log to keep")
                    continue
                logs[res.node.name] = log.kept()
                if log.cut:
                    sess.report.info(
                        f"{res.node.name}'s Locust log is {log.size} bytes: kept its last "
                        f"{LOG_CAP} on the master"
                    )
            else:
                sess.report.warn(
                    f"could not stop Locust on {res.node.name} ({res.error}): the master will "
                    "count it lost; its Locust log was not kept"
                )
        unkept = keep_logs(mr, rd, logs)
        if unkept:
            sess.report.warn(unkept)
    finally:
        mr.close()
    return leaving


@dataclass(frozen=True)
class LeaverLog:
    size: int  # bytes on the worker
    tail: bytes  # its last LOG_CAP at most

    @property
    def cut(self) -> bool:
        return self.size > len(self.tail)

    def kept(self) -> bytes:
        if not self.cut:
            return self.tail
        note = (
            f"[swarm: this worker left the run; its log was {self.size} bytes, only its last "
            f"{len(self.tail)} are kept]\n"
        )
        return note.encode() + self.tail


def log_cmd(rd: str) -> str:
    """The Locust log's size, a line, then its last LOG_CAP bytes; `none` without one."""
    return (
        f"cd {shlex.quote(rd)} 2>/dev/null && [ -f locust.log ] && "
        f"{{ wc -c <locust.log && tail -c {LOG_CAP} locust.log; }} || echo none"
    )


def parse_log(out: bytes) -> LeaverLog | None:
    head, _, rest = out.partition(b"\n")
    try:
        return LeaverLog(int(head.strip()), rest)
    except ValueError:
        return None


def keep_logs(mr: Runner, rd: str, logs: dict[str, bytes]) -> str | None:
    """Write the leavers' logs to the master, one exec, bounded -> why they were not kept
    (a line), None if they were: a failure loses the logs, never the `down`."""
    if not logs:
        return None
    where = f"{shlex.quote(rd)}/{RESULTS_DIR}/{LEFT_LOGS}"
    with_tar = tar_bytes(None, extra={f"{name}.log": data for name, data in logs.items()})
    # Appended, not replaced: a name may leave twice in one run (it left, a new worker of that
    # name joined, and left too); each leave's log follows the one before.
    cmd = (
        f"mkdir -p {where} && t=$(mktemp -d {where}/.in-XXXXXX) || exit 1; s=0; "
        f'tar -xzf - -C "$t" && for f in "$t"/*.log; do '
        f'cat "$f" >> {where}/"${{f##*/}}" || s=1; done || s=1; rm -rf "$t"; exit $s'
    )
    try:
        mr.run(cmd, timeout=KEEP_TIMEOUT_S, stdin=with_tar)
    except SwarmError as e:
        names = ", ".join(sorted(logs))
        return f"the Locust log of {names} was not kept (writing it on the master: {e})"
    return None


def _stop_and_read_log(sess: Session, node: Node) -> LeaverLog | None:
    """Stop the node's Locust and, in the same exec, read its log."""
    r = sess.provider.runner(sess.stack, node)
    try:
        cmd = f"{kill_cmd(sess.remote_dir)} >/dev/null; {log_cmd(sess.remote_dir)}"
        return parse_log(r.run_bytes(cmd, timeout=60))
    finally:
        r.close()
