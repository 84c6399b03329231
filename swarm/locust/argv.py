"""Locust's command lines for the master and the workers (pure: no I/O).

Paths are relative to the node's remote dir, the same on every provider.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

RESULTS_DIR = "results"  # under the remote dir, cleared at every start
CSV_PREFIX = f"{RESULTS_DIR}/locust"
HTML_FILE = f"{RESULTS_DIR}/report.html"
JSON_FILE = f"{RESULTS_DIR}/stats.json"
STATS_CSV = "locust_stats.csv"  # the name of CSV_PREFIX's stats file in a results dir
HISTORY_CSV = "locust_stats_history.csv"  # a row of the Aggregated every second
FAILURES_CSV = "locust_failures.csv"
EXCEPTIONS_CSV = "locust_exceptions.csv"
# swarm's Locust plugin (final_stats.py), written into the remote dir by every start command
# and loaded before the user's locustfile
PLUGIN_FILE = "swarm_final.py"
AUTOQUIT_S = 0  # quit as soon as the run ends (the API stays up while it runs)
DURATION_RE = re.compile(r"^(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+)s?)?$")


def parse_duration(text: str) -> int:
    """Locust's run time syntax ('90', '30s', '5m', '1h30m') -> seconds; ValueError if bad."""
    m = DURATION_RE.match(str(text).strip())
    if not m or not any(m.groups()):
        raise ValueError(f"bad run time {text!r}: use e.g. 30s, 5m, 1h30m")
    h, mi, s = (int(x or 0) for x in m.groups())
    secs = h * 3600 + mi * 60 + s
    if secs <= 0:
        raise ValueError(f"run time must be positive, got {text!r}")
    return secs


@dataclass(frozen=True)
class RunSpec:
    """Everything a run needs, validated by the pipeline before anything starts."""

    locustfile: str  # path relative to the shipped files dir
    host: str
    users: int
    spawn_rate: float
    run_time: str | None
    headless: bool
    expect_workers: int
    master_port: int
    web_port: int
    extra_args: tuple[str, ...] = ()  # the master's
    master_bind: str | None = None  # None: every interface (workers on other machines)
    worker_args: tuple[str, ...] = ()
    # [locust] env: reaches Locust through a file on the node (shell.env_file), never a
    # command line; kept out of repr, run.json records only the names.
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    otel: bool = False  # Locust's --otel, on the master and every worker


def _locustfiles(locustfile: str) -> str:
    return f"{PLUGIN_FILE},locustfiles/{locustfile}"


def master_argv(spec: RunSpec) -> list[str]:
    argv = [
        "-f",
        _locustfiles(spec.locustfile),
        "--master",
        "--master-bind-port",
        str(spec.master_port),
        *(["--master-bind-host", spec.master_bind] if spec.master_bind else []),
        "-H",
        spec.host,
        # The UI is reached through an SSH tunnel (or loopback locally), never an open port.
        "--web-host",
        "127.0.0.1",
        "--web-port",
        str(spec.web_port),
        "-u",
        str(spec.users),
        "-r",
        _num(spec.spawn_rate),
        # workers joining or leaving mid-run (`swarm up workers`) get or give up users
        "--enable-rebalancing",
    ]
    if spec.headless:
        # --autostart instead of --headless keeps the web API up, so `swarm status` works.
        argv += [
            "--autostart",
            "--autoquit",
            str(AUTOQUIT_S),
            "--expect-workers",
            str(spec.expect_workers),
            "--expect-workers-max-wait",
            "120",
            "--csv",
            CSV_PREFIX,
            "--html",
            HTML_FILE,
            "--json-file",
            JSON_FILE[:-5],
        ]
    if spec.run_time:
        argv += ["-t", spec.run_time]
    if spec.otel:
        argv.append("--otel")
    return argv + list(spec.extra_args)


def worker_argv(
    locustfile: str,
    master_host: str,
    master_port: int,
    processes: int,
    extra: Sequence[str] = (),
    *,
    otel: bool = False,
) -> list[str]:
    argv = [
        "-f",
        _locustfiles(locustfile),
        "--worker",
        "--master-host",
        master_host,
        "--master-port",
        str(master_port),
    ]
    if processes != 1:
        argv += ["--processes", str(processes)]  # -1: one per core, Locust detects it
    if otel:
        argv.append("--otel")
    return argv + list(extra)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)
