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

LOCK = threading.Lock()  # many hosts are first contacted at once, in threads


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
