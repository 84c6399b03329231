"""swarm: run distributed Locust load tests on EC2, SSH hosts, or local processes."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from swarm.api import RunResult, Stack

__version__ = "0.1.0"  # pyproject.toml reads it from here
# The name to pip install: `swarm` on PyPI is another project (a 2018 game), and so is
# `locust-swarm`. The command and the import package stay `swarm`.
DISTRIBUTION = "swarm-locust-ec2"

__all__ = ["DISTRIBUTION", "RunResult", "Stack", "__version__"]


def __getattr__(name: str) -> object:
    """`swarm.Stack` and `swarm.RunResult`, imported when first asked for: `swarm --version`
    and `import swarm.<anything>` stay free of the pipeline (and rich/click are never needed)."""
    if name in ("Stack", "RunResult"):
        from swarm import api

        return getattr(api, name)
    raise AttributeError(f"module 'swarm' has no attribute {name!r}")
