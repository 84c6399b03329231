"""The `swarm` command group and what every command gets: the config and a session."""

from __future__ import annotations

import click

from swarm import DISTRIBUTION, __version__, config
from swarm.api import Stack
from swarm.cli import render
from swarm.pipeline.session import Session


class Ctx:
    def __init__(self, config_path: str | None, stack: str | None, debug: bool):
        self.config_path, self.stack_name, self.debug = config_path, stack, debug

    def config(self) -> config.Config:
        return config.load(self.config_path, self.stack_name)

    def stack(self) -> Stack:
        return Stack(self.config(), reporter=render.ConsoleReporter())

    def session(self) -> Session:
        return self.stack().session


pass_ctx = click.make_pass_decorator(Ctx)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config", "config_path", metavar="PATH", help="swarm.toml to use (default ./swarm.toml)."
)
@click.option(
    "--stack", metavar="NAME", help="Stack name (overrides [stack] name and SWARM_STACK)."
)
@click.option("--debug", is_flag=True, help="Show tracebacks for every error.")
@click.version_option(
    __version__, prog_name="swarm", message=f"%(prog)s %(version)s (pip: {DISTRIBUTION})"
)
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, stack: str | None, debug: bool) -> None:
    """Run distributed Locust load tests on EC2, SSH hosts, or this machine."""
    ctx.obj = Ctx(config_path, stack, debug)
