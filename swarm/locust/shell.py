"""Shell snippets that drive Locust on a node, each beside the parser of what it prints.

Pure: nothing here touches a node; the pipeline sends these strings through a Runner. Every
snippet runs in, or names, the node's remote dir (`rd`). Locust is found and stopped by pid file,
never by name (`pkill -f locust` would also kill the shell running the command).
"""

from __future__ import annotations

import functools
import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from swarm.locust.argv import CSV_PREFIX, PLUGIN_FILE, RESULTS_DIR
from swarm.models import Probe

_FIND_LOCUST = (
    'L=venv/bin/locust; [ -x "$L" ] || L=$(command -v locust) || '
    '{ echo "locust not found: run swarm up again to bootstrap" >&2; exit 127; }; '
)
WARM_SCRIPT = "swarm-warm.py"
WARM_WAIT_STEPS = 1000  # x 0.02 s: a warm Locust still importing (just after `up`) may take a while
# Is pid $w our warm Locust (not a process that got its recycled pid)?
_IS_WARM = 'grep -qa swarm-warm "/proc/$w/cmdline" 2>/dev/null'
# Is this remote dir's warm Locust alive, and serving the locust we would run? ($w = its pid)
# `read`, not $(cat ...): a builtin, where every fork costs the host a millisecond or two.
_WARM_ALIVE = (
    'w=; read -r w 2>/dev/null <warm.pid; [ -n "$w" ] && kill -0 "$w" 2>/dev/null && '
    f'{_IS_WARM} && {{ b=; read -r b 2>/dev/null <warm.bin; [ "$b" = "$L" ]; }}'
)
WARM_REPLY_WAIT_S = 20  # for the warm Locust's reply to one start (it forks in milliseconds)
# Until the warm Locust says it forked the Locust of request $1: it writes "<id> <pid>" lines
# on warm.reply, which it holds open (so this read blocks, never sees EOF while it lives);
# lines of other requests (a start cut off before it read its own) are skipped.
_AWAIT_REPLY = (
    'exec <warm.reply || exit 1; while read -r id p; do [ "$id" = "$1" ] && exit 0; done; exit 1'
)


@functools.lru_cache(maxsize=2)
def _shipped(module: str) -> str:
    """A module of this package that runs on the nodes, quoted for the shell: read once,
    though every host's start command carries it."""
    return shlex.quote(Path(__file__).with_name(module).read_text(encoding="utf-8"))


def _warm_launch() -> str:
    """Start a warm Locust for $L in the background (cwd: the remote dir). It forks Locust for
    each argv written to warm.fifo (see warm_host.py). Needs $L; quietly does nothing when the
    locust script's interpreter is not a plain python path."""
    return (
        'py=$(head -n 1 "$L" 2>/dev/null | sed -n "s/^#! *//p" | cut -d" " -f1); '
        'case "$py" in */python*) ;; *) py="";; esac; '
        'if [ -n "$py" ] && [ -x "$py" ]; then '
        "rm -f warm.fifo warm.reply warm.pid warm.ready; mkfifo warm.fifo warm.reply && "
        'printf "%s" "$L" >warm.bin && '
        f"printf '%s' {_shipped('warm_host.py')} >{WARM_SCRIPT} && "
        f'{{ setsid "$py" {WARM_SCRIPT} "$L" >warm.log 2>&1 </dev/null & }}; fi'
    )


def warm_stop_cmd(rd: str) -> str:
    """Stop this remote dir's warm Locust (by its pid file, checked against its command line)."""
    return (
        f'(cd {shlex.quote(rd)} 2>/dev/null && w=$(cat warm.pid 2>/dev/null) && [ -n "$w" ] && '
        f'{_IS_WARM} && kill -TERM "$w"; rm -f warm.pid warm.ready; true)'
    )


def warm_restart_cmd(rd: str) -> str:
    """After a bootstrap (a new locust may be installed): replace the warm Locust."""
    return (
        f"{warm_stop_cmd(rd)}; (cd {shlex.quote(rd)} && {_FIND_LOCUST}{_warm_launch()}) "
        ">/dev/null 2>&1; true"
    )


ENV_FILE = "locust.env"  # [locust] env for the Locust being started: 0600, removed once read


def env_file(env: Mapping[str, str]) -> bytes:
    """[locust] env as the file start_cmd reads from its stdin: `export NAME='value'` lines
    (the warm Locust reads the same file with shlex). Through stdin, so no value is ever on a
    command line (logged, or shown by `ps`)."""
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items()).encode()


def start_cmd(
    rd: str,
    argv: Sequence[str],
    *,
    fresh_results: bool = False,
    warm: bool = False,
    env: bool = False,
) -> str:
    """Start Locust in the background in a session of its own and return at once; print its pid.

    The process group (pid = pgid) is what killall signals, so forked --processes children go
    too; locust.exit records the exit code for the controller. All fds are redirected, else an
    SSH channel would stay open until Locust ends. With `warm`, the host's warm Locust forks it
    (no import: milliseconds instead of ~0.5 CPU-s), else, or if that fails, it is started cold
    and a warm Locust is started for the next run.
    """
    args = " ".join(shlex.quote(a) for a in argv)
    clean = f"rm -rf {RESULTS_DIR}; mkdir -p {RESULTS_DIR}; " if fresh_results else ""
    take_env = f"(umask 077 && cat >{ENV_FILE}) || exit 1; " if env else ""
    source = f"[ -f {ENV_FILE} ] && {{ . ./{ENV_FILE}; rm -f {ENV_FILE}; }}; "
    inner = '"$0" "$@" >locust.log 2>&1 </dev/null; echo $? >locust.exit'
    cold = (
        f"setsid sh -c '{source}echo $$ >locust.pid; {inner}' \"$L\" {args} "
        ">/dev/null 2>&1 </dev/null & "
        "for i in $(seq 100); do [ -s locust.pid ] && break; sleep 0.02; done; "
    )
    via_warm = launch = ""
    if warm:
        request = shlex.quote(json.dumps(list(argv)))
        # A warm Locust that has warm.reply answers each request: one blocking read, bounded
        # by `timeout`. One started by an older swarm does not: poll for locust.pid.
        poll = (
            f"printf '%s\\n' {request} 1<>warm.fifo; "
            f"for i in $(seq {WARM_WAIT_STEPS}); do [ -s locust.pid ] && break; "
            'kill -0 "$w" 2>/dev/null || break; sleep 0.02; done; '
        )
        via_warm = (
            f"W=1; if {_WARM_ALIVE}; then W=0; "
            "if [ -p warm.reply ] && command -v timeout >/dev/null 2>&1; then "
            f"printf '%s %s\\n' \"$$\" {request} 1<>warm.fifo; "
            f'timeout {WARM_REPLY_WAIT_S} sh -c {shlex.quote(_AWAIT_REPLY)} sh "$$"; '
            f"else {poll}fi; "
            # one that did not answer in time must never answer late: a second Locust
            '[ -s locust.pid ] || { kill -KILL "$w" 2>/dev/null; W=1; }; fi; '
        )
        # after the cold start, so the Locust this run needs gets the CPU first
        launch = f'[ "$W" = 1 ] && {{ {_warm_launch()}; }}; '
    plugin = f"printf '%s' {_shipped('final_stats.py')} >{PLUGIN_FILE} || exit 1; "
    # With `env`, the file comes on stdin. A cold start's shell sources it (and removes it)
    # before it writes locust.pid, a warm one's child reads it before, so once locust.pid is
    # there the file can go: it never outlives the start, whichever path started Locust.
    return (
        f"cd {shlex.quote(rd)} && {clean}rm -f locust.pid locust.exit {ENV_FILE}; {take_env}"
        f"{plugin}{_FIND_LOCUST}{via_warm}[ -s locust.pid ] || {{ {cold}}}; "
        f"[ -s locust.pid ] && [ -f {ENV_FILE} ] && rm -f {ENV_FILE}; {launch}"
        "p=; read -r p 2>/dev/null <locust.pid; "
        '[ -n "$p" ] || { echo "Locust did not start (no locust.pid)" >&2; exit 1; }; echo "$p"'
    )


def kill_cmd(rd: str, grace_s: int = 10) -> str:
    """Stop the Locust this remote dir started (by its pid file, never by name); print nproc."""
    steps = grace_s * 10
    # A subshell: the `cd` must not leak into commands chained after this one.
    return (
        f"(cd {shlex.quote(rd)} 2>/dev/null && if [ -s locust.pid ]; then read -r p <locust.pid; "
        "kill -TERM -$p 2>/dev/null; "
        f"for i in $(seq {steps}); do kill -0 -$p 2>/dev/null || break; sleep 0.1; done; "
        "kill -KILL -$p 2>/dev/null; rm -f locust.pid; fi; "
        "nproc 2>/dev/null || echo 1)"
    )


@dataclass(frozen=True)
class HostFacts:
    """What a node says when its Locust is stopped before a run."""

    nproc: int  # cores: worker processes per node when [locust] processes = -1
    hostname: str  # Locust names a worker '<hostname>_<uuid>'


def stop_probe(rd: str) -> Probe[HostFacts]:
    """kill_cmd, then the host's hostname: one round trip before a run."""
    # the kernel's copy of the hostname, read by the shell itself: one fork fewer per host
    host = '{ h=; read -r h 2>/dev/null </proc/sys/kernel/hostname; echo "${h:-$(hostname)}"; }'
    return Probe(f"{kill_cmd(rd)} && {host}", _parse_host_facts)


def _parse_host_facts(stdout: str) -> HostFacts:
    lines = stdout.strip().splitlines()
    try:
        nproc = max(1, int(lines[-2]))
    except (ValueError, IndexError):
        nproc = 1
    return HostFacts(nproc, lines[-1].strip() if lines else "")


def running_cmd(rd: str) -> str:
    return (
        f"(cd {shlex.quote(rd)} 2>/dev/null && p=$(cat locust.pid 2>/dev/null) && "
        '[ -n "$p" ] && kill -0 -$p 2>/dev/null && echo yes || echo no)'
    )


@dataclass(frozen=True)
class CpuSample:
    ticks: int  # CPU ticks used by the Locust process group so far
    hz: int  # ticks per second
    uptime: float  # the host's uptime, seconds

    def percent_since(self, before: CpuSample, processes: int) -> float:
        """Average CPU % per Locust process since `before` (100 = one core fully busy)."""
        dt = self.uptime - before.uptime
        if dt <= 0 or processes < 1:
            return 0.0
        return (self.ticks - before.ticks) / self.hz / dt * 100.0 / processes


def cpu_probe(rd: str) -> Probe[CpuSample | None]:
    return Probe(cpu_sample_cmd(rd), parse_cpu_sample)


def cpu_sample_cmd(rd: str) -> str:
    """CPU ticks used so far by the Locust process group started here, the tick rate and the
    host's uptime: two samples give the group's CPU share. One awk over /proc, no per-pid forks.
    Through cat: awk given the files would stop at the first process that exits meanwhile
    (and print nothing: the sample was lost, the node left out of the peaks).
    (Locust's own figure comes every 10 s and its first sample is always 0.)"""
    awk = '{ sub(/.*\\) /, ""); if ($3 == g) t += $12 + $13 } END { print t + 0 }'
    return (
        f'(cd {shlex.quote(rd)} 2>/dev/null && p=$(cat locust.pid 2>/dev/null) && [ -n "$p" ] && '
        f'echo $(cat /proc/[0-9]*/stat 2>/dev/null | awk -v g="$p" {shlex.quote(awk)}) '
        "$(getconf CLK_TCK) $(cut -d' ' -f1 /proc/uptime)) || echo none"
    )


def parse_cpu_sample(text: str) -> CpuSample | None:
    try:
        ticks, hz, uptime = text.split()[-3:]
        return CpuSample(int(ticks), int(hz), float(uptime))
    except ValueError:
        return None


def stats_url_cmd(web_port: int, path: str = "/stats/requests") -> str:
    """Read the master's web API from the master itself (the UI listens on its loopback)."""
    url = shlex.quote(f"http://127.0.0.1:{web_port}{path}")
    py = (
        "import sys,urllib.request;"
        "sys.stdout.write(urllib.request.urlopen(sys.argv[1],timeout=3).read().decode())"
    )
    # python3 only where curl is missing: not a Python start-up for every poll that fails
    return (
        f"if command -v curl >/dev/null 2>&1; then curl -fsS --max-time 3 {url} 2>/dev/null; "
        f"else python3 -c {shlex.quote(py)} {url} 2>/dev/null; fi"
    )


def stop_test_cmd(web_port: int, timeout_s: int = 20) -> str:
    """Stop the test through the master's API (POST /stop), on the master: Locust's stop tells
    the workers to stop and returns once they all have, so their last figures are in (SIGTERM
    alone gives them half a second). Bounded; says nothing, fails quietly."""
    url = shlex.quote(f"http://127.0.0.1:{web_port}/stop")
    py = (
        "import sys,urllib.request;"
        f"urllib.request.urlopen(sys.argv[1],data=b'',timeout={timeout_s}).read()"
    )
    return (
        f"if command -v curl >/dev/null 2>&1; then curl -fsS -X POST --max-time {timeout_s} "
        f"{url} >/dev/null 2>&1; else python3 -c {shlex.quote(py)} {url} >/dev/null 2>&1; fi; true"
    )


def wait_workers_cmd(rd: str, web_port: int, expected: int, timeout_s: float) -> str:
    """Wait ON the master until `expected` workers are connected or Locust has exited (bounded
    by timeout_s): one SSH exec polling locally every 0.1 s, instead of one exec per poll.
    Leaves the count in $n. It reads the master's log ("... reported as ready. N workers
    connected."): Locust caches /stats/requests for 2 s, so an early poll of the API would
    report 0 workers for 2 s after they connected. The API is asked once a second as well,
    in case a Locust version words that line differently."""
    log_n = (
        f"grep -o 'ready\\. [0-9]* workers connected' {shlex.quote(rd)}/locust.log 2>/dev/null"
        " | tail -n 1 | grep -o '[0-9][0-9]*'"
    )
    api_n = f"({stats_url_cmd(web_port)}) | grep -o '\"worker_count\": *[0-9]*' | grep -o '[0-9]*$'"
    return "n=0; " + _poll_while_running(
        rd,
        timeout_s,
        (
            f"n=$({log_n}); "
            f'[ $((i % 10)) = 9 ] && [ "${{n:-0}}" -lt {int(expected)} ] && n=$( {api_n} ); '
            f'[ "${{n:-0}}" -ge {int(expected)} ] && break; '
        ),
    )


def wait_exit_cmd(rd: str, timeout_s: float) -> str:
    """Wait ON the master until its Locust has exited (bounded), polling every 0.1 s."""
    return _poll_while_running(rd, timeout_s)


def _poll_while_running(rd: str, timeout_s: float, body: str = "") -> str:
    """Shell loop every 0.1 s, at most timeout_s, while this remote dir's Locust runs; `body`
    runs first in each round ($i counts rounds) and may `break`."""
    steps = max(1, int(timeout_s / 0.1))
    return (
        f"i=0; while [ $i -lt {steps} ]; do {body}"
        f'[ "$( {running_cmd(rd)} )" = yes ] || break; sleep 0.1; i=$((i+1)); done'
    )


@dataclass(frozen=True)
class ResultsFacts:
    """What the master holds from its last headless run (for `swarm results --fetch`)."""

    answered: bool  # the probe ran at all
    running: bool  # Locust still runs: the results are partial
    has_stats: bool
    exit_code: int | None  # the master's Locust exit code, once it has exited


def results_probe(rd: str) -> Probe[ResultsFacts]:
    return Probe(
        f"echo running=$( {running_cmd(rd)} ); cd {shlex.quote(rd)} 2>/dev/null && "
        f"{{ [ -s {CSV_PREFIX}_stats.csv ] && echo stats=yes; "
        "echo exit=$(cat locust.exit 2>/dev/null); }",
        _parse_results_facts,
    )


def _parse_results_facts(stdout: str) -> ResultsFacts:
    facts = dict(line.split("=", 1) for line in stdout.splitlines() if "=" in line)
    code = facts.get("exit", "").strip()
    return ResultsFacts(
        "running" in facts,
        facts.get("running") == "yes",
        facts.get("stats") == "yes",
        int(code) if code.isdigit() else None,
    )
