"""Where swarm keeps controller-side files (never the source of truth for EC2)."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def scaffold_dir() -> Path:
    """What `swarm init` writes into a project (locustfiles/, bootstrap/), shipped in the
    package so it is there wherever swarm is installed."""
    return Path(__file__).parent / "data" / "scaffold"


def default_bootstrap_dir() -> Path:
    """The packaged bootstrap/: used when a project has none of its own, and shipped next to
    a project's own so its script can run it first."""
    return scaffold_dir() / "bootstrap"


def state_dir() -> Path:
    """SWARM_STATE_DIR, else the platform's user state dir (~/.local/state/swarm)."""
    env = os.environ.get("SWARM_STATE_DIR")
    return Path(env) if env else Path(platformdirs.user_state_dir("swarm"))


def cache_dir() -> Path:
    """SWARM_CACHE_DIR, else the platform's user cache dir (~/.cache/swarm): what can be made
    again (the offline wheelhouses)."""
    env = os.environ.get("SWARM_CACHE_DIR")
    return Path(env) if env else Path(platformdirs.user_cache_dir("swarm"))


def stack_dir(provider: str, stack: str, create: bool = False) -> Path:
    d = state_dir() / provider / stack
    if create:
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return d


def write_private(path: Path, data: str | bytes) -> None:
    """Write a secret (a private key) readable by its owner only, from the first byte."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data.encode() if isinstance(data, str) else data)
    finally:
        os.close(fd)
