"""Each node's phase during `up` (launching → running → bootstrapping → ready | failed), as a
user sees it: a line per change in a log, a live table on a terminal, and a node that waits
long in one phase named with how long."""
from __future__ import annotations

import io
import re
import time

from rich.console import Console

from swarm.cli import progress as shown_progress
from swarm.pipeline.progress import Board, Phase, stuck_line
from tests.helpers import swarm
from tests.reliability import ec2_stack, instances


def test_a_board_keeps_each_nodes_phase_and_names_the_stuck_ones():
    changes = []
    board = Board(lambda _, row: changes.append((row.label, row.phase)))
    t0 = time.monotonic()
    board.add(["i-1", "i-2"], Phase.LAUNCHING, t0)
    board.move("i-1", Phase.RUNNING, "worker-1")
    board.move("i-1", Phase.RUNNING, "worker-1")  # no change: not reported again
    board.move("i-2", Phase.RUNNING, "worker-2")
    board.move("i-1", Phase.READY)
    board.fail("i-2", RuntimeError("SSH did not answer within 10s\nmore"))
    assert changes == [("i-1", Phase.LAUNCHING), ("i-2", Phase.LAUNCHING),
                       ("worker-1", Phase.RUNNING), ("worker-2", Phase.RUNNING),
                       ("worker-1", Phase.READY), ("worker-2", Phase.FAILED)]
    rows = {r.label: r for r in board.rows()}
    assert rows["worker-2"].note == "SSH did not answer within 10s"
    assert rows["worker-1"].started == t0
    assert board.stuck(0) == []  # final phases are never stuck

    board.add(["i-3"], Phase.LAUNCHING, t0 - 95)
    board.move("i-3", Phase.BOOTSTRAPPING, "worker-3")
    later = time.monotonic() + 95
    assert [r.label for r in board.stuck(60, now=later)] == ["worker-3"]
    assert stuck_line(board.stuck(60, now=later), now=later) == \
        "still waiting: worker-3 bootstrapping for 1m35s"


def test_in_a_log_each_change_is_a_line_and_a_waiting_node_is_named():
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=False, no_color=True, width=160)
    with shown_progress.shown(console, stuck_after_s=0.3) as board:
        board.add(["i-9"], Phase.LAUNCHING, time.monotonic())
        board.move("i-9", Phase.BOOTSTRAPPING, "worker-9")
        deadline = time.monotonic() + 10
        while "still waiting" not in buf.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
        board.move("i-9", Phase.READY)
    text = buf.getvalue()
    assert "i-9" not in text, text  # launching is said once for all, by the pipeline
    assert re.search(r"worker-9: bootstrapping \(\d+\.\ds\)", text), text
    assert re.search(r"still waiting: worker-9 bootstrapping for \ds", text), text
    assert re.search(r"worker-9: ready \(\d+\.\ds\)", text), text


def test_on_a_terminal_the_board_is_a_live_table():
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, no_color=True, width=100)
    with shown_progress.shown(console) as board:
        board.add(["i-1", "i-2"], Phase.LAUNCHING, time.monotonic())
        board.move("i-1", Phase.READY, "master")
        board.move("i-2", Phase.FAILED, "worker-1", note="bootstrap failed (exit 3)")
    text = buf.getvalue()
    for word in ("node", "phase", "master", "ready", "worker-1", "failed",
                 "bootstrap failed (exit 3)"):
        assert word in text, text


def test_up_shows_every_nodes_phase_and_which_one_failed(workdir, cli_env, ec2_env,
                                                         emulated_ec2):
    """The CLI, on the emulated cloud: up master, then up workers -n 2 where the second
    worker's sshd never answers. Each node's phases are lines with their elapsed time; the
    failed one is named with why; nothing is left after `down`."""
    env = ec2_stack(workdir, cli_env, ec2_env, "phases")
    (workdir / "swarm.toml").write_text(
        (workdir / "swarm.toml").read_text().replace("ssh_timeout = 10", "ssh_timeout = 4"))
    emulated_ec2.host_options = lambda ip, index: {"dead": "refuse"} if index == 2 else None
    res = swarm("up", "master", cwd=workdir, env=env, timeout=120)
    assert res.code == 0, res.err
    lines = [ln for ln in res.err.splitlines()
             if re.match(r"• master: (running|bootstrapping|ready|failed) \(", ln)]
    assert [ln.split("(")[0].strip() for ln in lines] == \
        ["• master: running", "• master: bootstrapping", "• master: ready"], res.err

    res = swarm("up", "workers", "-n", "2", cwd=workdir, env=env, timeout=120)
    assert res.code == 1, res.err
    assert re.search(r"worker-1: ready \(\d+\.\ds\)", res.err), res.err
    failed = re.search(r"worker-2: failed \((\d+\.\d)s\): (.+)", res.err)
    assert failed, res.err
    assert float(failed.group(1)) >= 4  # it waited its ssh_timeout for SSH
    res = swarm("down", cwd=workdir, env=env, timeout=180)
    assert res.code == 0, res.err
    assert instances(emulated_ec2.client(), "phases") == []
