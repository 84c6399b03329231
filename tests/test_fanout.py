"""The fan-out's bound: never more than FANOUT_LIMIT hosts worked on at once by one call,
every host's result in order, and a fan-out inside a fan-out's fn (or beside it) finishing
where one shared pool would deadlock. Pure logic: the hosts here are sleeps (the real-sshd
side of many hosts is tests/test_many_logins.py)."""
from __future__ import annotations

import threading
import time

from swarm.models import Node, Role
from swarm.remote import fanout
from swarm.remote.fanout import FANOUT_LIMIT, fan_out


def _nodes(n: int) -> list[Node]:
    return [Node(id=f"n{i}", name=f"n{i}", role=Role.WORKER) for i in range(n)]


def test_at_most_the_limit_at_once_and_every_result_in_order():
    lock, busy, peak = threading.Lock(), [0], [0]

    def one(node: Node) -> str:
        with lock:
            busy[0] += 1
            peak[0] = max(peak[0], busy[0])
        time.sleep(0.02)
        with lock:
            busy[0] -= 1
        return node.id

    nodes = _nodes(FANOUT_LIMIT * 2 + 7)
    got = fan_out(nodes, one, what="sleep")
    assert [r.value for r in got] == [n.id for n in nodes]
    assert 1 < peak[0] <= FANOUT_LIMIT


def test_a_fan_out_inside_a_fan_out_finishes(monkeypatch):
    monkeypatch.setattr(fanout, "FANOUT_LIMIT", 4)     # outer calls fill every thread
    done: list[int] = []

    def outer(node: Node) -> int:
        inner = fan_out(_nodes(9), lambda n: time.sleep(0.005) or 1, what="inner")
        return sum(r.value for r in inner)

    t = threading.Thread(target=lambda: done.extend(
        r.value for r in fan_out(_nodes(10), outer, what="outer")), daemon=True)
    t.start()
    t.join(30)
    assert not t.is_alive(), "nested fan-out deadlocked"
    assert done == [9] * 10
