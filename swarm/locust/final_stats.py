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
"""

from __future__ import annotations

import csv
import os
from typing import Any

from locust import events
from locust.rpc import Message
from locust.runners import MasterRunner, WorkerRunner
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

    elif isinstance(runner, MasterRunner):
        stats = environment.stats

        def _serialize_keeping_entries() -> list[Any]:
            return [
                e.serialize() for e in stats.entries.values() if e.num_requests or e.num_failures
            ]

        stats.serialize_stats = _serialize_keeping_entries

        @environment.events.quit.add_listener
        def _write_final_csv(**__: Any) -> None:
            prefix = getattr(environment.parsed_options, "csv_prefix", None)
            if prefix:
                write_csv_files(environment, prefix)


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
