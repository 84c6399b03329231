"""Never power anything off for real: every emulated host gets its own `shutdown`, `poweroff`,
`halt` and `reboot` (one stub) and its own /run (an overlay: reads see the machine's, writes stay
in the host's directory), because the hosts share this machine's kernel.

The stub records each call (`<unix time> <name> <args>`) in the host's /root/.swarm-shutdown.log
(= ``Host.home``) and behaves as systemd's `shutdown` does for what swarm relies on:
`shutdown -h +M` writes /run/systemd/shutdown/scheduled (``USEC=`` the time, in µs), a later
one replaces it, `shutdown -c` removes it. It never powers anything off.

A host with a root of its own (rootfs.py) has the stubs in /usr/sbin of its own layer. One
without (``own_root=False``) gets them as the top layer of a read-only overlay of /usr/sbin:
/usr/sbin/shutdown is a symlink to /bin/systemctl here, and a bind mount onto it would follow
the link and stub systemctl itself (/sbin is a symlink to usr/sbin). sudo's secure_path and
sshd's PATH both reach /usr/sbin, and swarm calls `shutdown` by name.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

LOG = ".swarm-shutdown.log"           # in the host's /root
STUBBED = ("shutdown", "poweroff", "halt", "reboot")

_STUB = """#!/bin/sh
# emulated host: record the request, never power anything off (tests/emulation/power.py)
now=$(date +%s)
name=$(basename "$0")
echo "$now $name $*" >>/root/{log}
[ "$name" = shutdown ] || exit 0
{fail}
sched=/run/systemd/shutdown/scheduled
m=""
for a in "$@"; do
    case "$a" in
        -c) rm -f "$sched"; exit 0 ;;
        now) m=0 ;;
        +[0-9]*) m=${{a#+}} ;;
    esac
done
[ -n "$m" ] || m=1
mkdir -p /run/systemd/shutdown
printf 'USEC=%s000000\\nWARN_WALL=1\\nMODE=poweroff\\n' $((now + m * 60)) >"$sched"
exit 0
"""


def write_stubs(sbin: Path, broken: bool = False) -> None:
    """The stubs, in ``sbin``. ``broken``: a host where no power-off can be scheduled:
    `shutdown` fails (as without logind)."""
    sbin.mkdir(mode=0o755, parents=True, exist_ok=True)
    for name in STUBBED:
        path = sbin / name
        path.write_text(_STUB.format(log=LOG, fail='echo "shutdown: no logind" >&2; exit 1'
                                     if broken else ""))
        path.chmod(0o755)


def run_mount(hdir: Path, at: str, broken: bool = False) -> str:
    """The init's mount line for the host's own /run, mounted at ``at``; ``broken``: read-only
    (the fallback cannot record itself)."""
    upper, work = hdir / "run-upper", hdir / "run-work"
    for d in (upper, work):
        d.mkdir(mode=0o755, exist_ok=True)
    q = shlex.quote
    run = (f"lowerdir={q(str(upper))}:/run" if broken    # two lowers: a read-only overlay
           else f"lowerdir=/run,upperdir={q(str(upper))},workdir={q(str(work))}")
    return f"mount -t overlay overlay -o {run} {q(at)}"


def shared_root_mounts(hdir: Path, broken: bool = False) -> list[str]:
    """A host without a root of its own: the init's mount lines (before sshd starts)."""
    stubs = hdir / "power-stubs"
    write_stubs(stubs, broken)
    return [f"mount -t overlay overlay -o lowerdir={shlex.quote(str(stubs))}:/usr/sbin /usr/sbin",
            run_mount(hdir, "/run", broken)]


@dataclass(frozen=True)
class PowerCall:
    at: float          # unix seconds, when it was called
    name: str          # shutdown, poweroff, ...
    args: tuple[str, ...]

    @property
    def minutes(self) -> int | None:
        """M of `shutdown -h +M`, else None."""
        for a in self.args:
            if a.startswith("+") and a[1:].isdigit():
                return int(a[1:])
        return None

    @property
    def powers_off_at(self) -> float | None:
        return None if self.minutes is None else self.at + self.minutes * 60


def calls(home: Path) -> list[PowerCall]:
    """Every power request the host's stub recorded, oldest first."""
    try:
        text = (home / LOG).read_text()
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        at, name, *args = line.split()
        out.append(PowerCall(float(at), name, tuple(args)))
    return out
