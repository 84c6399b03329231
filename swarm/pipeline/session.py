"""What every command acts on: a stack, its provider, and where progress goes."""

from __future__ import annotations

import importlib
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from swarm.config import Config
from swarm.errors import UsageError
from swarm.models import Node, Role, name_nodes
from swarm.pipeline.progress import Board
from swarm.providers import get_provider
from swarm.providers.base import MasterPorts, Provider, Stack


class Reporter:
    """Progress for a person: the CLI renders it; the pipeline never prints.
    This base shows nothing (for library use and tests); the CLI's ConsoleReporter overrides
    every method."""

    def info(self, msg: str) -> None:
        pass

    def warn(self, msg: str) -> None:
        pass

    @contextmanager
    def phases(self) -> Iterator[Board]:
        """A board on which the block moves each node through its phases; shown while the
        block runs. Here: kept, not shown."""
        board = Board()
        try:
            yield board
        finally:
            board.close()

    @contextmanager
    def running(self) -> Iterator[Callable[[str], None]]:
        """A line the block keeps replacing with how a run goes (called about once a second;
        the reporter decides how often to show it). Here: not shown."""
        yield lambda _text: None


class Silent(Reporter):
    """Says nothing."""


def locust_version() -> str:
    """This machine's Locust version, without importing Locust (0.3 s and a gevent
    monkey-patch on every command)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("locust")
    except PackageNotFoundError:  # pragma: no cover - an unusual install
        import locust

        return str(locust.__version__)


OTEL_EXTRA = "otel"  # Locust's extra for --otel: the OpenTelemetry SDK, exporters, instrumentation


def locust_requirement(version: str, otel: bool) -> str:
    """What pip installs on a node: `locust==V`, or `locust[otel]==V` for [locust] otel."""
    return f"locust[{OTEL_EXTRA}]=={version}" if otel else f"locust=={version}"


def missing_for_extra(extra: str, dist: str = "locust") -> list[str]:
    """The distributions `dist[extra]` requires that this machine's Python lacks. Read from
    the metadata, as pip would: importing them (grpc among them) would cost a second."""
    from importlib.metadata import PackageNotFoundError, requires, version

    wanted = re.compile(rf"""extra\s*==\s*['"]{re.escape(extra)}['"]""")
    missing = []
    for req in requires(dist) or []:
        name, _, marker = req.partition(";")
        if not wanted.search(marker):
            continue
        project = re.split(r"[\s\[<>=!~(]", name.strip(), maxsplit=1)[0]
        try:
            version(project)
        except PackageNotFoundError:
            missing.append(project)
    return missing


@dataclass
class Session:
    """A stack and its provider, plus the reporter for this command."""

    stack: Stack
    provider: Provider
    report: Reporter = field(default_factory=Silent)

    @classmethod
    def open(cls, config: Config, report: Reporter | None = None) -> Session:
        stack = Stack.from_config(config)
        provider = get_provider(stack)
        if provider.can_ssh:
            # paramiko takes ~0.2 s to import; start now so it overlaps the cloud API calls
            # instead of holding up every host's thread of the first fan-out. Not a daemon:
            # a command that fails at once (bad input) would exit mid-import, and a daemon
            # thread stopped at exit inside cryptography's Rust extension aborts the process
            # ("FATAL: exception not rethrown", exit -6 instead of 2; seen once in 700 tests).
            threading.Thread(
                target=importlib.import_module,
                args=("swarm.remote.ssh",),
                daemon=False,
                name="import-ssh",
            ).start()
        sess = cls(stack, provider, report or Silent())
        provider.progress = sess.report.info
        return sess

    @property
    def ports(self) -> MasterPorts:
        """Where the stack's master listens (on local: this stack's own free ports, kept with
        its master: asked each time, so a master created meanwhile is seen)."""
        return self.provider.master_ports(self.stack)

    @property
    def remote_dir(self) -> str:
        return self.stack.config.bootstrap.remote_dir

    def nodes(self, role: Role | None = None) -> list[Node]:
        named = name_nodes(self.provider.list_nodes(self.stack))
        return [n for n in named if role is None or n.role == role]

    def find(self, name: str) -> Node:
        """A node by what users type: its name or its id."""
        nodes = self.nodes()
        for n in nodes:
            if name in (n.name, n.id):
                return n
        names = ", ".join(n.name for n in nodes) or "none"
        raise UsageError(f"no node {name!r} in stack {self.stack.name!r} (nodes: {names})")

    def flush_notices(self) -> None:
        for msg in self.provider.notices:
            self.report.warn(msg)
        self.provider.notices.clear()
