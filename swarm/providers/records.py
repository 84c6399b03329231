"""A small JSON list of node records in the state dir, for providers with no API of their own
(local, hosts). A flock makes concurrent `swarm up` calls on one stack safe."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def records(d: Path, write: bool) -> Iterator[list[dict[str, Any]]]:
    """Yield the list of records; with write=True, changes to it are saved atomically."""
    if not write and not d.exists():
        yield []
        return
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(d / ".lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX if write else fcntl.LOCK_SH)
        f = d / "nodes.json"
        recs = json.loads(f.read_text()) if f.exists() else []
        yield recs
        if write:
            tmp = d / "nodes.json.tmp"
            tmp.write_text(json.dumps(recs, indent=1))
            os.replace(tmp, f)
