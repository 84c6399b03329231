"""swarm/remote/ship.py: the tree digest, the parsers, and its shell run for real with bash on
this machine (the relay on loopback): store on a "master" dir, fetch into a "worker" dir,
no stale files left, a wrong token or sha refused, nothing fetched when unchanged."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from swarm.remote.base import replace_tree_cmd, tar_bytes
from swarm.remote.ship import (
    FETCH_FAILED,
    Shipment,
    ShipState,
    parse_relay,
    parse_state,
    receive_cmd,
    relay_cmd,
    state_probe,
    stop_relay_cmd,
    tree_digest,
    with_token_first,
)
from tests.helpers import free_port
from tests.reliability import poll


def tree(tmp_path: Path, files: dict[str, str], name: str = "src") -> Path:
    d = tmp_path / name
    for rel, text in files.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_text(text)
    return d


def sh(cmd: str, cwd: Path, stdin: bytes = b"", timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", cmd], cwd=cwd, input=stdin, capture_output=True,
                          timeout=timeout)


def test_digest_ignores_mtimes_and_gzip_header_but_not_content_mode_or_names(tmp_path):
    d = tree(tmp_path, {"a.py": "x = 1\n", "sub/b.txt": "b\n"})
    first = tar_bytes(d)
    time.sleep(1.1)                       # gzip's header and the members' mtimes move on
    os.utime(d / "a.py")
    second = tar_bytes(d)
    assert first != second
    assert tree_digest(first) == tree_digest(second)
    (d / "a.py").write_text("x = 2\n")
    changed = tree_digest(tar_bytes(d))
    assert changed != tree_digest(first)
    (d / "a.py").chmod(0o755)
    assert tree_digest(tar_bytes(d)) != changed
    (d / "sub/b.txt").rename(d / "sub/c.txt")
    assert tree_digest(tar_bytes(d)) not in (changed, tree_digest(first))


def test_parsers():
    out = "noise\nswarm-ship locustfiles abc - -\n4\nhost-1\n"
    assert parse_state(out, "locustfiles") == ShipState("abc", "", "")
    assert parse_state(out, "bootstrap") == ShipState()
    assert parse_state("swarm-ship bootstrap d1 d2 s2", "bootstrap") == ShipState("d1", "d2", "s2")
    assert parse_state("swarm-ship bootstrap d1", "bootstrap") == ShipState()
    assert parse_relay("swarm-relay 4242\n") == 4242
    assert parse_relay("Traceback ...\nOSError: [Errno 98] Address already in use") is None


def test_store_relay_fetch_round_trip_on_loopback(tmp_path):
    master, worker = tmp_path / "m", tmp_path / "w"
    master.mkdir(), worker.mkdir()
    src = tree(tmp_path, {"locustfile.py": "# v1\n", "lib/x.py": "y = 1\n"})
    s = Shipment.of("locustfiles", tar_bytes(src))
    rd = "swarm"
    probe = state_probe(rd, s.tree)
    assert probe.parse(sh(probe.command, master).stdout.decode()) == ShipState()

    # the master: unpacks and stores
    assert sh(receive_cmd(rd, s, store=True), master, s.tar).returncode == 0
    assert (master / "swarm/locustfiles/lib/x.py").read_text() == "y = 1\n"
    assert probe.parse(sh(probe.command, master).stdout.decode()) == ShipState(
        s.digest, s.digest, s.sha)

    # a worker with a stale file fetches from the relay: the stale file is gone
    (worker / "swarm/locustfiles").mkdir(parents=True)
    (worker / "swarm/locustfiles/old.py").write_text("stale")
    port = free_port()
    token = "t0ken"
    res = sh(with_token_first("true", relay_cmd(rd, s.tree, "127.0.0.1", port, 2, 30)), master,
             f"{token}\n".encode())
    pid = parse_relay(res.stdout.decode())
    assert pid, res
    try:
        from swarm.remote.ship import fetch_cmd
        wrong = sh(fetch_cmd(rd, s, s.sha, "127.0.0.1", port), worker, b"nope\n")
        assert wrong.returncode == FETCH_FAILED
        assert (worker / "swarm/locustfiles/old.py").exists()     # nothing changed
        bad_sha = sh(fetch_cmd(rd, s, "0" * 64, "127.0.0.1", port), worker, f"{token}\n".encode())
        assert bad_sha.returncode == FETCH_FAILED
        assert (worker / "swarm/locustfiles/old.py").exists()
        ok = sh(fetch_cmd(rd, s, s.sha, "127.0.0.1", port), worker, f"{token}\n".encode())
        assert ok.returncode == 0, ok.stderr
        assert sorted(p.name for p in (worker / "swarm/locustfiles").iterdir()) == [
            "lib", "locustfile.py"]
        assert probe.parse(sh(probe.command, worker).stdout.decode()).unpacked == s.digest
        # it served its count (2): it has exited and removed its pid file
        poll(lambda: not (master / f"swarm/.ship/relay-{s.tree}.pid").exists(), timeout=10,
             what="the relay to exit")
        # unchanged: no connection at all (the relay is gone; the fetch still succeeds)
        again = sh(fetch_cmd(rd, s, s.sha, "127.0.0.1", port), worker, f"{token}\n".encode())
        assert again.returncode == 0
        refused = sh(fetch_cmd(rd, Shipment.of("locustfiles", tar_bytes(
            tree(tmp_path, {"locustfile.py": "# v2\n"}, "src2"))), s.sha, "127.0.0.1", port),
            worker, f"{token}\n".encode())
        assert refused.returncode == FETCH_FAILED
    finally:
        sh(stop_relay_cmd(rd, s.tree, pid), master)
    assert not Path(f"/proc/{pid}").exists() or "python" not in Path(
        f"/proc/{pid}/cmdline").read_text(errors="replace")


def test_one_relay_serves_each_tree_it_is_asked_for_even_one_stored_after_it_started(tmp_path):
    """bootstrap/ and then the wheelhouse (stored once the first worker said which it needs)
    from the same relay and port; a tree it does not have, or a name that is no tree, gets
    nothing (FETCH_FAILED: the worker's copy is then sent from the controller)."""
    master, worker = tmp_path / "m", tmp_path / "w"
    master.mkdir(), worker.mkdir()
    rd, token, port = "swarm", "t0ken", free_port()
    boot = Shipment.of("bootstrap", tar_bytes(tree(tmp_path, {"bootstrap.sh": "true\n"}, "b")))
    wheels = Shipment.of("wheelhouse", tar_bytes(tree(tmp_path, {"a.whl": "w" * 5000}, "wh")))
    assert sh(receive_cmd(rd, boot, unpack=False, store=True), master, boot.tar).returncode == 0
    res = sh(with_token_first("true", relay_cmd(rd, boot.tree, "127.0.0.1", port, 4, 30)), master,
             f"{token}\n".encode())
    pid = parse_relay(res.stdout.decode())
    assert pid, res
    tok = f"{token}\n".encode()
    try:
        from swarm.remote.ship import fetch_cmd
        assert sh(fetch_cmd(rd, wheels, wheels.sha, "127.0.0.1", port), worker, tok).returncode \
            == FETCH_FAILED                                   # not stored yet
        assert sh(receive_cmd(rd, wheels, unpack=False, store=True), master,
                  wheels.tar).returncode == 0
        for s in (boot, wheels):
            got = sh(fetch_cmd(rd, s, s.sha, "127.0.0.1", port), worker, tok)
            assert got.returncode == 0, got.stderr
        assert (worker / "swarm/bootstrap/bootstrap.sh").read_text() == "true\n"
        assert (worker / "swarm/wheelhouse/a.whl").read_text() == "w" * 5000
        # a request for what is no tree name (a path) is not served
        (master / "swarm/.ship/x.tgz").write_bytes(wheels.tar)
        odd = Shipment("../.ship/x", wheels.tar, wheels.digest, wheels.sha)
        assert sh(fetch_cmd(rd, odd, wheels.sha, "127.0.0.1", port), worker, tok).returncode \
            == FETCH_FAILED
    finally:
        sh(stop_relay_cmd(rd, boot.tree, pid), master)


def test_relay_that_cannot_listen_says_why(tmp_path):
    master = tmp_path / "m"
    master.mkdir()
    s = Shipment.of("bootstrap", tar_bytes(tree(tmp_path, {"bootstrap.sh": "true\n"})))
    assert sh(receive_cmd("swarm", s, unpack=False, store=True), master, s.tar).returncode == 0
    assert not (master / "swarm/bootstrap").exists()          # stored only
    res = sh(with_token_first("true", relay_cmd("swarm", s.tree, "10.255.255.1", free_port(), 1,
                                                5)), master, b"tok\n")
    assert parse_relay(res.stdout.decode()) is None
    assert b"Cannot assign requested address" in res.stderr


def test_a_tar_that_fails_to_unpack_leaves_the_old_tree(tmp_path):
    """The wheelhouse and a joiner's locustfiles swap a tree in this way: a broken stream
    must not replace it (the caller tests the exit status, where `set -e` would do nothing)."""
    old = tree(tmp_path, {"a.py": "old"}, name="files")
    cmd = replace_tree_cmd("files")
    bad = subprocess.run(["sh", "-c", f"{cmd} || exit 96"], cwd=tmp_path, input=b"not a tar",
                         capture_output=True, timeout=30)
    assert bad.returncode == 96
    assert (old / "a.py").read_text() == "old"
    good = subprocess.run(["sh", "-c", cmd], cwd=tmp_path, timeout=30, capture_output=True,
                          input=tar_bytes(tree(tmp_path, {"b.py": "new"})))
    assert good.returncode == 0, good.stderr
    assert sorted(p.name for p in old.iterdir()) == ["b.py"]
