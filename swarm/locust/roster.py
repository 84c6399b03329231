"""The roster of a running test: workers that joined it or left it after it started.

`swarm up workers` / `swarm down workers` (one process) append a line to a file on the master;
`swarm run` (another process, perhaps on another machine) reads it in the same exec as its
poll of the master's API, and `swarm status` beside that API too. The file lives beside the
run's meta, so it is reset with it at every start. Pure: the pipeline runs these strings.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Any

from swarm.models import Word

ROSTER = "roster.jsonl"  # on the master, under the remote dir


class Move(Word):
    JOINED = "joined"
    LEFT = "left"


@dataclass(frozen=True)
class RosterEntry:
    event: Move
    worker: str  # the node's name
    at: str  # ISO 8601, UTC
    processes: int  # Locust worker processes on that node
    hostname: str = ""  # Locust names a worker '<hostname>_<uuid>' (joiners only)

    def to_json(self) -> dict[str, Any]:
        return {
            "event": str(self.event),
            "worker": self.worker,
            "at": self.at,
            "processes": self.processes,
            "hostname": self.hostname,
        }


def append_cmd(entries: list[RosterEntry]) -> str:
    """Append entries (cwd: the remote dir). One write per line: O_APPEND keeps each whole
    when two commands append at once."""
    return "; ".join(
        f"printf '%s\\n' {shlex.quote(json.dumps(e.to_json()))} >> {ROSTER}" for e in entries
    )


def read_cmd(rd: str) -> str:
    return f"cat {shlex.quote(rd)}/{ROSTER} 2>/dev/null"


def parse(text: str) -> list[RosterEntry]:
    """A line cut short or not ours is skipped: a roster is read while it is written."""
    out = []
    for line in text.splitlines():
        try:
            d = json.loads(line)
            out.append(
                RosterEntry(
                    Move(d["event"]),
                    str(d["worker"]),
                    str(d["at"]),
                    int(d.get("processes") or 0),
                    str(d.get("hostname") or ""),
                )
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
    return out


@dataclass(frozen=True)
class Participant:
    """A worker node that took part in a run, and when (None: from the start / till the end)."""

    name: str
    processes: int
    joined_at: str | None
    left_at: str | None = None


def participants(
    started_at: str | None, processes: dict[str, int], entries: list[RosterEntry]
) -> list[Participant]:
    """Every worker of a run: those it started with (joined at its start), then the roster's
    joiners; each one's last leaving (a node rejoins under a new name, never the same one)."""
    took: dict[str, Participant] = {
        name: Participant(name, n, started_at) for name, n in sorted(processes.items())
    }
    for e in entries:
        if e.event == Move.JOINED and e.worker not in took:
            took[e.worker] = Participant(e.worker, e.processes, e.at)
        elif e.event == Move.LEFT and e.worker in took:
            p = took[e.worker]
            took[e.worker] = Participant(p.name, p.processes, p.joined_at, e.at)
    return list(took.values())


def left(entries: list[RosterEntry]) -> set[str]:
    return {e.worker for e in entries if e.event == Move.LEFT}


def joined(entries: list[RosterEntry]) -> list[RosterEntry]:
    return [e for e in entries if e.event == Move.JOINED]
