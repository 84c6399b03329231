"""The node's power-off at the stack's expiry: the shell that schedules it, beside the parser of
what the node says is scheduled.

Pure: nothing here touches a node. The same schedule runs in an instance's user data (as root,
at first boot) and over SSH (`bootstrap` when user data did not schedule it, `swarm extend`).
`shutdown -h +M` asks systemd-logind, which records the pending shutdown in
/run/systemd/shutdown/scheduled (USEC=<when, µs>) until it happens or is cancelled; a new
`shutdown -h +M` replaces a pending one, so re-scheduling never cancels first (a cancel
followed by a failed schedule would leave the node with none). Without systemd, a background
`sleep; poweroff` does it; its pid and time are kept in /run/swarm-poweroff so the next
schedule replaces it and a check can see it is alive.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass

from swarm.models import Probe, Word

SCHEDULED = "/run/systemd/shutdown/scheduled"
FALLBACK = "/run/swarm-poweroff"  # "<pid> <unix seconds>" of the sleep; poweroff fallback
MARK = "swarm-poweroff"


class PowerOff(Word):
    SYSTEMD = "systemd"  # shutdown -h +M is pending in logind
    FALLBACK = "fallback"  # a sleep; poweroff process is alive
    NONE = "none"  # nothing will power the node off


@dataclass(frozen=True)
class Scheduled:
    how: PowerOff
    at: float | None = None  # unix seconds, when the node says it powers off

    @property
    def ok(self) -> bool:
        return self.how != PowerOff.NONE


def minutes_until(expires_at: float, now: float) -> int:
    """`shutdown -h +M` counts whole minutes from when it runs: round up, so a node never
    powers off before the stack's expiry (at most a minute after it)."""
    return max(1, math.ceil((expires_at - now) / 60))


def schedule_script(minutes: int) -> str:
    """sh, as root: power off in `minutes`; then drop the previous fallback, if any."""
    secs = minutes * 60
    return (
        f"old=$(cut -d' ' -f1 {FALLBACK} 2>/dev/null); "
        f"if shutdown -h +{minutes} 'swarm: the stack expired' >/dev/null 2>&1; "
        f"then rm -f {FALLBACK}; "
        f"else nohup sh -c 'sleep {secs}; poweroff' >/dev/null 2>&1 </dev/null & "
        f'echo "$! $(( $(date +%s) + {secs} ))" >{FALLBACK}; fi; '
        'if [ -n "$old" ]; then kill "$old" 2>/dev/null; fi; true'
    )


def user_data(minutes: int) -> str:
    """A first-boot script (user data) that powers the instance off (= terminates it, with
    InstanceInitiatedShutdownBehavior=terminate) in `minutes`."""
    return (
        "#!/bin/sh\n"
        f"# swarm: power off in {minutes} min, at the stack's expiry; `swarm extend` moves it.\n"
        f"{schedule_script(minutes)}\n"
    )


_REPORT = (
    f"if [ -f {SCHEDULED} ]; then "
    f"echo {MARK} {PowerOff.SYSTEMD} $(sed -n 's/^USEC=//p' {SCHEDULED}); "
    f'elif set -- $(cat {FALLBACK} 2>/dev/null) && [ -n "${{1:-}}" ] && kill -0 "$1" 2>/dev/null; '
    f'then echo {MARK} {PowerOff.FALLBACK} "$2"000000; '
    f"else echo {MARK} {PowerOff.NONE}; fi"
)


def _as_root(script: str) -> str:
    """Directly as root, else through passwordless sudo (-n: nobody types a password)."""
    return (
        f"s={shlex.quote(script)}; "
        'if [ "$(id -u)" -eq 0 ]; then sh -c "$s"; else sudo -n sh -c "$s"; fi'
    )


def parse(stdout: str) -> Scheduled:
    for line in stdout.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == MARK and words[1] in tuple(PowerOff):
            how = PowerOff(words[1])
            usec = words[2] if len(words) > 2 and words[2].isdigit() else None
            return Scheduled(how, int(usec) / 1e6 if usec and how != PowerOff.NONE else None)
    return Scheduled(PowerOff.NONE)


def check_probe() -> Probe[Scheduled]:
    """What will power the node off, and when."""
    return Probe(_as_root(_REPORT), parse)


def schedule_probe(minutes: int, only_if_missing: bool = False) -> Probe[Scheduled]:
    """Schedule the power-off in `minutes` (only_if_missing: unless one is pending already,
    as user data schedules it at boot), then say what is scheduled."""
    script = schedule_script(minutes)
    if only_if_missing:
        script = f"case $({_REPORT}) in *' {PowerOff.NONE}') {script};; esac"
    return Probe(_as_root(f"{script}; {_REPORT}"), parse)
