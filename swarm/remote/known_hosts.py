"""The stack's known_hosts file: host keys pinned on first contact, forgotten with the node.

A cloud hands a freed private IP to the next instance, which has a new host key: the key of
a node swarm terminated must not make its successor look like an attack. A changed key on a
node that is still there is still refused (remote/ssh.py).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import Path

import paramiko

LOCK = threading.Lock()  # many hosts are first contacted at once, in threads
# path -> (its mtime and size when parsed, its keys): read-only once parsed
_PARSED: dict[Path, tuple[tuple[int, int], paramiko.HostKeys]] = {}
_PARSING = threading.Lock()  # not LOCK: pinning a new host reads the keys while it holds LOCK


def pinned(path: Path, host: str, port: int = 22) -> list[tuple[str, str, paramiko.PKey]]:
    """The keys `path` pins for host:port, as (known_hosts name, key type, key). The file is
    parsed once per change, not once per connection: a run's connections to N hosts would
    otherwise parse its N lines N times (a quarter of a second of CPU at 30 hosts)."""
    name = host if port == 22 else f"[{host}]:{port}"
    return [(name, kind, key) for kind, key in lookup(path, name).items()]


def lookup(path: Path, name: str) -> dict[str, paramiko.PKey]:
    """key type -> key that `path` pins for a known_hosts name ("host" or "[host]:port")."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return {}
    stamp = (st.st_mtime_ns, st.st_size)
    with _PARSING:
        got = _PARSED.get(path)
        if got is None or got[0] != stamp:
            keys = paramiko.HostKeys()
            keys.load(str(path))
            got = _PARSED[path] = (stamp, keys)
    return dict(got[1].lookup(name) or {})


def _names(host: str) -> set[str]:
    """How a host appears in known_hosts: bare on port 22, else "[host]:port"."""
    return {host, f"[{host}]"}


def forget(path: Path, hosts: Iterable[str]) -> None:
    """Drop every line of `path` naming one of `hosts` (any port); a no-op without a file."""
    gone = set().union(*(_names(h) for h in hosts))
    if not gone or not path.is_file():
        return
    with LOCK:
        lines = path.read_text(encoding="ascii", errors="replace").splitlines(keepends=True)
        kept = [
            ln
            for ln in lines
            if not {
                n.rsplit(":", 1)[0] if n.startswith("[") else n
                for n in ln.split(" ", 1)[0].split(",")
            }
            & gone
        ]
        if len(kept) == len(lines):
            return
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(kept), encoding="ascii")
        os.replace(tmp, path)
