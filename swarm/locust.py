"""Pure builders of Locust command lines and shell snippets, and parsers of Locust's output.

Nothing here touches the network or a node: core sends these strings through a Runner.
Paths are relative to the node's remote dir (`rd`), the same on every provider.
"""
from __future__ import annotations

import csv
import functools
import io
import json
import re
import shlex
from dataclasses import dataclass, field
from typing import Any, Sequence

RESULTS_DIR = "results"          # under the remote dir, cleared at every start
CSV_PREFIX = f"{RESULTS_DIR}/locust"
HTML_FILE = f"{RESULTS_DIR}/report.html"
JSON_FILE = f"{RESULTS_DIR}/stats.json"
AUTOQUIT_S = 0                    # quit as soon as the run ends (the API stays up while it runs)
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
    """Everything a run needs, validated by core before anything starts."""
    locustfile: str                 # path relative to the shipped files dir
    host: str
    users: int
    spawn_rate: float
    run_time: str | None
    headless: bool
    expect_workers: int
    master_port: int
    web_port: int
    extra_args: tuple[str, ...] = ()


def master_argv(spec: RunSpec) -> list[str]:
    argv = ["-f", f"locustfiles/{spec.locustfile}", "--master",
            "--master-bind-port", str(spec.master_port), "-H", spec.host,
            # The UI is reached through an SSH tunnel (or loopback locally), never an open port.
            "--web-host", "127.0.0.1", "--web-port", str(spec.web_port),
            "-u", str(spec.users), "-r", _num(spec.spawn_rate)]
    if spec.headless:
        # --autostart instead of --headless keeps the web API up, so `swarm status` works.
        argv += ["--autostart", "--autoquit", str(AUTOQUIT_S),
                 "--expect-workers", str(spec.expect_workers),
                 "--expect-workers-max-wait", "120",
                 "--csv", CSV_PREFIX, "--html", HTML_FILE, "--json-file", JSON_FILE[:-5]]
    if spec.run_time:
        argv += ["-t", spec.run_time]
    return argv + list(spec.extra_args)


def worker_argv(locustfile: str, master_host: str, master_port: int, processes: int) -> list[str]:
    argv = ["-f", f"locustfiles/{locustfile}", "--worker",
            "--master-host", master_host, "--master-port", str(master_port)]
    if processes != 1:
        argv += ["--processes", str(processes)]  # -1: one per core, Locust detects it
    return argv


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


_FIND_LOCUST = ('L=venv/bin/locust; [ -x "$L" ] || L=$(command -v locust) || '
                '{ echo "locust not found: run swarm up again to bootstrap" >&2; exit 127; }; ')
WARM_SCRIPT = "swarm-warm.py"
WARM_WAIT_STEPS = 1000     # x 0.02 s: a warm Locust still importing (just after `up`) may take a while
# Is pid $w our warm Locust (not a process that got its recycled pid)?
_IS_WARM = 'grep -qa swarm-warm "/proc/$w/cmdline" 2>/dev/null'
# Is this remote dir's warm Locust alive, and serving the locust we would run? ($w = its pid)
_WARM_ALIVE = ('w=$(cat warm.pid 2>/dev/null); [ -n "$w" ] && kill -0 "$w" 2>/dev/null && '
               f'{_IS_WARM} && [ "$(cat warm.bin 2>/dev/null)" = "$L" ]')


@functools.lru_cache(maxsize=1)
def _warm_source() -> str:
    """warm_host.py, quoted for the shell: read once, though every host's start command has it."""
    from pathlib import Path
    return shlex.quote(Path(__file__).with_name("warm_host.py").read_text(encoding="utf-8"))


def _warm_launch() -> str:
    """Start a warm Locust for $L in the background (cwd: the remote dir). It forks Locust for
    each argv written to warm.fifo (see warm_host.py). Needs $L; quietly does nothing when the
    locust script's interpreter is not a plain python path."""
    return ('py=$(head -n 1 "$L" 2>/dev/null | sed -n "s/^#! *//p" | cut -d" " -f1); '
            'case "$py" in */python*) ;; *) py="";; esac; '
            'if [ -n "$py" ] && [ -x "$py" ]; then '
            'rm -f warm.fifo warm.pid warm.ready; mkfifo warm.fifo && printf "%s" "$L" >warm.bin && '
            f"printf '%s' {_warm_source()} >{WARM_SCRIPT} && "
            f'{{ setsid "$py" {WARM_SCRIPT} "$L" >warm.log 2>&1 </dev/null & }}; fi')


def warm_stop_cmd(rd: str) -> str:
    """Stop this remote dir's warm Locust (by its pid file, checked against its command line)."""
    return (f"(cd {shlex.quote(rd)} 2>/dev/null && w=$(cat warm.pid 2>/dev/null) && [ -n \"$w\" ] && "
            f'{_IS_WARM} && kill -TERM "$w"; rm -f warm.pid warm.ready; true)')


def warm_restart_cmd(rd: str) -> str:
    """After a bootstrap (a new locust may be installed): replace the warm Locust."""
    return (f"{warm_stop_cmd(rd)}; (cd {shlex.quote(rd)} && {_FIND_LOCUST}{_warm_launch()}) "
            ">/dev/null 2>&1; true")


def start_cmd(rd: str, argv: Sequence[str], *, fresh_results: bool = False,
              warm: bool = False) -> str:
    """Start Locust in the background in a session of its own and return at once; print its pid.

    The process group (pid = pgid) is what killall signals, so forked --processes children go
    too; locust.exit records the exit code for the controller. All fds are redirected, else an
    SSH channel would stay open until Locust ends. With `warm`, the host's warm Locust forks it
    (no import: milliseconds instead of ~0.5 CPU-s), else, or if that fails, it is started cold
    and a warm Locust is started for the next run.
    """
    args = " ".join(shlex.quote(a) for a in argv)
    clean = f"rm -rf {RESULTS_DIR}; mkdir -p {RESULTS_DIR}; " if fresh_results else ""
    inner = '"$0" "$@" >locust.log 2>&1 </dev/null; echo $? >locust.exit'
    cold = (f"setsid sh -c 'echo $$ >locust.pid; {inner}' \"$L\" {args} >/dev/null 2>&1 </dev/null & "
            "for i in $(seq 100); do [ -s locust.pid ] && break; sleep 0.02; done; ")
    via_warm = launch = ""
    if warm:
        request = shlex.quote(json.dumps(list(argv)))
        via_warm = (f"W=1; if {_WARM_ALIVE}; then W=0; printf '%s\\n' {request} 1<>warm.fifo; "
                    f"for i in $(seq {WARM_WAIT_STEPS}); do [ -s locust.pid ] && break; "
                    'kill -0 "$w" 2>/dev/null || break; sleep 0.02; done; '
                    # one that did not answer in time must never answer late: a second Locust
                    '[ -s locust.pid ] || { kill -KILL "$w" 2>/dev/null; W=1; }; fi; ')
        # after the cold start, so the Locust this run needs gets the CPU first
        launch = f'[ "$W" = 1 ] && {{ {_warm_launch()}; }}; '
    return (f"cd {shlex.quote(rd)} && {clean}rm -f locust.pid locust.exit; {_FIND_LOCUST}"
            f"{via_warm}[ -s locust.pid ] || {{ {cold}}}; {launch}cat locust.pid")


def kill_cmd(rd: str, grace_s: int = 10) -> str:
    """Stop the Locust this remote dir started (by its pid file, never by name); print nproc."""
    steps = grace_s * 10
    # A subshell: the `cd` must not leak into commands chained after this one.
    return (f"(cd {shlex.quote(rd)} 2>/dev/null && if [ -s locust.pid ]; then p=$(cat locust.pid); "
            "kill -TERM -$p 2>/dev/null; "
            f"for i in $(seq {steps}); do kill -0 -$p 2>/dev/null || break; sleep 0.1; done; "
            "kill -KILL -$p 2>/dev/null; rm -f locust.pid; fi; "
            "nproc 2>/dev/null || echo 1)")


def running_cmd(rd: str) -> str:
    return (f"(cd {shlex.quote(rd)} 2>/dev/null && p=$(cat locust.pid 2>/dev/null) && "
            '[ -n "$p" ] && kill -0 -$p 2>/dev/null && echo yes || echo no)')


def cpu_sample_cmd(rd: str) -> str:
    """CPU ticks used so far by the Locust process group started here, the tick rate and the
    host's uptime: two samples give the group's CPU share. One awk over /proc, no per-pid forks.
    (Locust's own figure comes every 10 s and its first sample is always 0.)"""
    awk = "{ sub(/.*\\) /, \"\"); if ($3 == g) t += $12 + $13 } END { print t + 0 }"
    return (f"(cd {shlex.quote(rd)} 2>/dev/null && p=$(cat locust.pid 2>/dev/null) && [ -n \"$p\" ] && "
            f"echo $(awk -v g=\"$p\" {shlex.quote(awk)} /proc/[0-9]*/stat 2>/dev/null) "
            "$(getconf CLK_TCK) $(cut -d' ' -f1 /proc/uptime)) || echo none")


def parse_cpu_sample(text: str) -> tuple[int, int, float] | None:
    try:
        ticks, hz, uptime = text.split()[-3:]
        return int(ticks), int(hz), float(uptime)
    except ValueError:
        return None


def cpu_percent(before: tuple[int, int, float], after: tuple[int, int, float], processes: int) -> float:
    """Average CPU % per Locust process between two samples (100 = one core fully busy)."""
    dt = after[2] - before[2]
    if dt <= 0 or processes < 1:
        return 0.0
    return (after[0] - before[0]) / after[1] / dt * 100.0 / processes


def stats_url_cmd(web_port: int, path: str = "/stats/requests") -> str:
    """Read the master's web API from the master itself (the UI listens on its loopback)."""
    url = shlex.quote(f"http://127.0.0.1:{web_port}{path}")
    py = ("import sys,urllib.request;"
          "sys.stdout.write(urllib.request.urlopen(sys.argv[1],timeout=3).read().decode())")
    # python3 only where curl is missing: not a Python start-up for every poll that fails
    return (f"if command -v curl >/dev/null 2>&1; then curl -fsS --max-time 3 {url} 2>/dev/null; "
            f"else python3 -c {shlex.quote(py)} {url} 2>/dev/null; fi")


def wait_workers_cmd(rd: str, web_port: int, expected: int, timeout_s: float) -> str:
    """Wait ON the master until `expected` workers are connected or Locust has exited (bounded
    by timeout_s): one SSH exec polling locally every 0.1 s, instead of one exec per poll.
    Leaves the count in $n. It reads the master's log ("... reported as ready. N workers
    connected."): Locust caches /stats/requests for 2 s, so an early poll of the API would
    report 0 workers for 2 s after they connected. The API is asked once a second as well,
    in case a Locust version words that line differently."""
    log_n = (f"grep -o 'ready\\. [0-9]* workers connected' {shlex.quote(rd)}/locust.log 2>/dev/null"
             " | tail -n 1 | grep -o '[0-9][0-9]*'")
    api_n = (f"({stats_url_cmd(web_port)}) | grep -o '\"worker_count\": *[0-9]*' | grep -o '[0-9]*$'")
    return "n=0; " + _poll_while_running(rd, timeout_s, (
        f"n=$({log_n}); "
        f'[ $((i % 10)) = 9 ] && [ "${{n:-0}}" -lt {int(expected)} ] && n=$( {api_n} ); '
        f'[ "${{n:-0}}" -ge {int(expected)} ] && break; '))


def wait_exit_cmd(rd: str, timeout_s: float) -> str:
    """Wait ON the master until its Locust has exited (bounded), polling every 0.1 s."""
    return _poll_while_running(rd, timeout_s)


def _poll_while_running(rd: str, timeout_s: float, body: str = "") -> str:
    """Shell loop every 0.1 s, at most timeout_s, while this remote dir's Locust runs; `body`
    runs first in each round ($i counts rounds) and may `break`."""
    steps = max(1, int(timeout_s / 0.1))
    return (f"i=0; while [ $i -lt {steps} ]; do {body}"
            f'[ "$( {running_cmd(rd)} )" = yes ] || break; sleep 0.1; i=$((i+1)); done')


# ---- parsing results ----

@dataclass(frozen=True)
class EndpointStats:
    method: str
    name: str
    requests: int
    failures: int
    rps: float
    avg_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    @property
    def fail_ratio(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class Summary:
    endpoints: list[EndpointStats]
    total: EndpointStats
    workers_cpu: dict[str, float] = field(default_factory=dict)   # peak CPU % per worker

    def to_json(self) -> dict[str, Any]:
        def row(e: EndpointStats) -> dict[str, Any]:
            return {"method": e.method, "name": e.name, "requests": e.requests,
                    "failures": e.failures, "rps": round(e.rps, 2), "avg_ms": e.avg_ms,
                    "p50_ms": e.p50_ms, "p95_ms": e.p95_ms, "p99_ms": e.p99_ms,
                    "max_ms": e.max_ms, "fail_ratio": round(e.fail_ratio, 6)}
        return {"total": row(self.total), "endpoints": [row(e) for e in self.endpoints],
                "workers_cpu": dict(self.workers_cpu)}


def _f(value: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0  # Locust writes "N/A" for percentiles of an endpoint with no requests


def parse_stats_csv(text: str) -> Summary:
    """Locust's <prefix>_stats.csv -> Summary (the 'Aggregated' row is the total)."""
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows or "Request Count" not in rows[0]:
        raise ValueError("not a Locust stats CSV")
    parsed = []
    for r in rows:
        parsed.append(EndpointStats(
            method=r.get("Type") or "", name=r.get("Name") or "",
            requests=int(_f(r["Request Count"])), failures=int(_f(r["Failure Count"])),
            rps=_f(r.get("Requests/s")), avg_ms=_f(r.get("Average Response Time")),
            p50_ms=_f(r.get("50%")), p95_ms=_f(r.get("95%")), p99_ms=_f(r.get("99%")),
            max_ms=_f(r.get("Max Response Time"))))
    total = next((p for p in parsed if p.name == "Aggregated"), None)
    endpoints = [p for p in parsed if p.name != "Aggregated"]
    if total is None:
        total = EndpointStats("", "Aggregated", sum(e.requests for e in endpoints),
                              sum(e.failures for e in endpoints), sum(e.rps for e in endpoints),
                              0.0, 0.0, 0.0, 0.0, 0.0)
    return Summary(endpoints, total)
