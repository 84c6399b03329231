"""swarm's Locust plugin: final figures, never the last second short. Shipped to every node
and loaded beside the run's locustfile (`-f swarm_final.py,locustfiles/x.py`); it runs
there, so it uses the standard library and Locust only.

Two losses it closes (Locust 2.47, read from its source):
- A worker told to stop stops its users and answers `client_stopped` without a stats report;
  what its users did since its last periodic report (every 3 s) reaches the master only if
  the master is still listening 3 s later, and it quits at once. Here every worker sends its
  report when its test stops, before `client_stopped` on the same socket, so the master has
  every worker's last figures when its own stop returns.
- The master rewrites `<prefix>_stats.csv` once a second and closes it at exit without a
  last write. Here, when Locust quits, the stats, failures and exceptions CSV files are
  written once more from the final figures (atomically: the reader never sees half a file).
- Locust's --json-file write, just before `quit`, serializes each entry with
  `get_stripped_report`, which resets it (what a worker's report to its master needs): the CSV
  files written on `quit` would have the Aggregated row right and every per-name row at 0. On
  the master, whose serialize_stats feeds only that file (and --json), it serializes without
  the reset. Not earlier, on `quitting`: the master's own quitting listener stops the workers,
  and their last reports arrive after it.

And one delay it removes: the master ends a run with fixed sleeps, 2.5 s of the 2.7 s from
"--run-time limit reached" to its exit. Its stop looks every 1 s whether the workers have
stopped (they answer within tens of ms), and its quit, called three times on the way out
(the run's end, the quitting event, the exit), sleeps 0.5 s each for the workers' last
reports. Here the master waits for what it waits for, checking every 20 ms, within the same
bounds or longer ones: the workers' user counts, then each worker's last report. After a
stop every worker answered, nothing is left to wait for: it tells them to quit and goes on,
and its socket is flushed before the process ends (the quit reaches every worker; their own
quitting, ~20 ms of CPU each, is no longer the master's: 0.6 s at N = 30 on 2 cores).
"""

from __future__ import annotations

import atexit
import csv
import logging
import os
import sys
import time
from typing import Any

import gevent
import locust.runners
from locust import events
from locust.rpc import Message
from locust.runners import STATE_MISSING, MasterRunner, WorkerRunner
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV


@events.init.add_listener
def _on_init(environment: Any, **_: Any) -> None:
    runner = environment.runner
    if isinstance(runner, WorkerRunner):

        @environment.events.test_stop.add_listener
        def _report_last(**__: Any) -> None:
            data: dict[str, Any] = {}
            environment.events.report_to_master.fire(client_id=runner.client_id, data=data)
            runner.client.send(Message("stats", data, runner.client_id))

        # A worker told to end (SIGTERM: it leaves a running test) says `quit` on `quitting`,
        # before it stops its users and reports: a master that then quits (its last worker
        # gone) never reads that report. This listener, registered after Locust's, runs
        # before it (`quitting` fires in reverse): the figures go first. (A report is what
        # happened since the last one: the one on test_stop adds only what came after.)
        environment.events.quitting.add_listener(lambda **__: _report_last())

        @environment.events.quit.add_listener
        def _flush(**__: Any) -> None:
            # what is still queued goes out before the process ends: a warm fork ends with
            # os._exit, which kills ZeroMQ's I/O thread with its queue (at most 1 s: a master
            # that is gone takes nothing)
            runner.client.close(linger=1000)

    elif isinstance(runner, MasterRunner):
        stats = environment.stats

        def _serialize_keeping_entries() -> list[Any]:
            return [
                e.serialize() for e in stats.entries.values() if e.num_requests or e.num_failures
            ]

        stats.serialize_stats = _serialize_keeping_entries
        _end_without_fixed_sleeps(runner)
        environment.events.quit.add_listener(lambda **__: _deliver_quits(runner))

        @environment.events.quit.add_listener
        def _write_final_csv(exit_code: int = 0, **__: Any) -> None:
            prefix = getattr(environment.parsed_options, "csv_prefix", None)
            if prefix:
                write_csv_files(environment, prefix)
            if not getattr(environment.parsed_options, "otel", False) and not os.environ.get(
                WARM_FORK
            ):
                # Registered last, so it runs first, once Locust has closed its files and
                # called sys.exit: the interpreter's own teardown took 0.1 s here on an idle
                # machine and 1.3 s on a busy one, with nothing left to write. (OpenTelemetry
                # flushes its exporters in an atexit handler: with --otel, Python ends as usual.
                # A warm fork ends itself so, after writing locust.exit.)
                atexit.register(_exit_now, exit_code)


WARM_FORK = "SWARM_WARM_FORK"  # set by warm_host.py in the Locust it forks


def _exit_now(code: int) -> None:
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


STEP_S = 0.02
LAST_REPORTS_S = 2.0  # Locust's own wait is 0.5 s, and a busy worker may need more
DELIVER_MS = 500  # bound on flushing the quit messages at exit (a peer's TCP window full)


def _deliver_quits(runner: Any) -> None:
    """What the master's socket still holds (the workers' quit) goes out before the process
    ends: the process ends with os._exit, which would drop it, and a worker that never hears
    its quit goes on for Locust's 60 s heartbeat timeout. Nothing sends after the quit event."""
    try:
        sock = runner.server.socket
        context = sock.context
        sock.close(linger=DELIVER_MS)
        # term returns once the closed socket's queue is on the wire, or after the linger; in
        # a thread of gevent's pool (a real one), bounded here too: it blocks the thread
        gevent.get_hub().threadpool.spawn(context.term).get(timeout=DELIVER_MS / 1000 + 0.5)
    except (Exception, gevent.Timeout):  # another Locust than the one read, or the bound
        pass


def _end_without_fixed_sleeps(runner: Any) -> None:
    end = _QuickEnd(runner)
    runner.environment.events.test_start.add_listener(end.started)
    runner.environment.events.worker_report.add_listener(end.reported)
    runner.stop, runner.quit = end.stop, end.quit


class _QuickEnd:
    """The master's stop and quit, as Locust's but without their fixed sleeps."""

    def __init__(self, runner: Any):
        self.runner = runner
        self.locust_stop = runner.stop
        self.all_in = False  # every worker's last report is in (the test stopped everywhere)
        self.quitted = False
        self.since_quit: set[str] = set()  # workers whose stats came in since the quit was sent

    def started(self, **__: Any) -> None:
        self.all_in = False

    def reported(self, client_id: str, **__: Any) -> None:
        self.since_quit.add(client_id)

    def stop(self, send_stop_to_client: bool = True) -> None:
        # Locust's stop, with its 1 s polls of the workers' user count cut short once no
        # worker runs a user (its own 60 s bound stays)
        if not hasattr(locust.runners, "gevent"):  # another Locust than the one read
            return self.locust_stop(send_stop_to_client)
        locust.runners.gevent = _ShortPolls(self.runner, gevent.getcurrent())
        try:
            self.locust_stop(send_stop_to_client)
        finally:
            locust.runners.gevent = gevent
        if send_stop_to_client and self.runner.user_count == 0:
            # every worker answered client_stopped, each after its last report (the
            # worker side of this plugin): nothing more is coming
            self.all_in = True
        return None

    def quit(self) -> None:
        # Locust's own: stop without telling the workers, tell each to quit, wait 0.5 s for
        # their last reports (they send them on receiving the quit, long before their own quit
        # message, which a busy worker sends seconds later), end the runner. Here, after a
        # stop every worker answered, it does not wait (their figures are in; the quit
        # messages are flushed at exit, _deliver_quits), and otherwise until every worker
        # still heard from has reported. Called again on the way out, it has nothing left to
        # wait for: nothing is received any more.
        runner = self.runner
        self.stop(send_stop_to_client=False)
        if self.quitted:
            return
        self.quitted = True
        waiting = {c.id for c in runner.clients.all if c.state != STATE_MISSING}
        self.since_quit.clear()
        for client in runner.clients.all:
            runner.server.send_to_client(Message("quit", None, client.id))
        if not self.all_in:
            deadline = time.monotonic() + LAST_REPORTS_S
            while time.monotonic() < deadline and any(
                c in runner.clients and c not in self.since_quit for c in waiting
            ):
                gevent.sleep(STEP_S)
        runner.greenlet.kill(block=True)


class _ShortPolls:
    """gevent as locust.runners sees it while the master stops: the stopping greenlet's
    sleeps of a second or more end as soon as no worker runs a user; the rest is gevent."""

    def __init__(self, runner: Any, owner: Any):
        self._runner, self._owner = runner, owner

    def __getattr__(self, name: str) -> Any:
        return getattr(gevent, name)

    def sleep(self, seconds: float = 0, ref: bool = True) -> None:
        if seconds < 1 or gevent.getcurrent() is not self._owner:
            return gevent.sleep(seconds, ref)
        end = time.monotonic() + seconds
        while self._runner.user_count and (left := end - time.monotonic()) > 0:
            gevent.sleep(min(STEP_S, left))
        return None


def write_csv_files(environment: Any, prefix: str) -> None:
    writer = StatsCSV(environment, PERCENTILES_TO_REPORT)
    for suffix, write in (
        ("_stats.csv", writer.requests_csv),
        ("_failures.csv", writer.failures_csv),
        ("_exceptions.csv", writer.exceptions_csv),
    ):
        path = prefix + suffix
        tmp = f"{path}.swarm-tmp"
        with open(tmp, "w", newline="") as f:
            write(csv.writer(f))
        os.replace(tmp, path)
