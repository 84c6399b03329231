"""The entry point and the one error boundary: SwarmError -> `error: ...` (exit 1, or 2 for
bad input), click's usage errors (2), Ctrl-C (130)."""

from __future__ import annotations

import atexit
import os
import sys
import threading
import traceback

import click
from rich.markup import escape

from swarm.cli import commands, extend, render, results, run, wheels  # noqa: F401  (they register the commands)
from swarm.cli.app import cli
from swarm.errors import Interrupted, SwarmError


def _interrupted() -> int:
    """Ctrl-C: say so and end now. Threads still talking to hosts (a bootstrap can take
    minutes) are not waited for: the process ends without joining them; what runs on the
    nodes keeps running, and `swarm status` / `swarm down` find it by its tags."""
    render.err.print("interrupted")
    busy = [
        t
        for t in threading.enumerate()
        if t is not threading.main_thread() and t.is_alive() and not t.daemon
    ]
    if busy:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(130)
    return 130


def main(argv: list[str] | None = None) -> int:
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, prog_name="swarm", standalone_mode=False)
        return 0
    except (click.exceptions.Abort, KeyboardInterrupt):
        return _interrupted()
    except Interrupted as e:
        render.err.print(escape(str(e)))
        return e.exit_code
    except click.ClickException as e:
        click.echo(f"error: {e.format_message()}", err=True)
        return e.exit_code
    except SwarmError as e:
        if debug:
            traceback.print_exc()  # the chain: swarm's error and the library's cause
        click.echo(f"error: {e}", err=True)
        return e.exit_code
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)


def entry() -> None:
    """The `swarm` command: main(), the exit handlers (logging's flush, the thread pools'
    joins), then the end of the process without the interpreter's teardown: freeing every
    module and object (botocore's models, paramiko's) took 0.2 s after the last line on a busy
    machine, with nothing left to write. Connections still open close with the process, as
    run_after_exit relies on. main() itself returns, for callers in this process."""
    code = main()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
