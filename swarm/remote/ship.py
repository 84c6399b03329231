"""Shipping a tree (bootstrap/, locustfiles/) once: its digest, and the shell that stores it on
the master and relays it to the workers inside the network, each beside the parser of what it
prints.

On every node `<rd>/.ship/<tree>.sha256` holds the digest of the tree unpacked at `<rd>/<tree>`
(written after a successful unpack, removed before one). The master also keeps the tar it got
as `<rd>/.ship/<tree>.tgz`, with `<tree>.tgz.sha256` ("<digest> <sha256 of those bytes>"), and
serves it to the workers through a short-lived relay: a Python process listening on the
master's private IP that sends the tar to each connection that first sends the command's
token. The token only ever travels on stdin, never on a command line.
"""

from __future__ import annotations

import hashlib
import io
import shlex
import tarfile
from dataclasses import dataclass

from swarm.models import Probe

SHIP_DIR = ".ship"
NONE = "-"  # what the probe prints for "no record"
STATE_MARK = "swarm-ship"
RELAY_MARK = "swarm-relay"
FETCH_FAILED = 97  # exit code of a fetch that did not get a good tar from the relay


def tree_digest(tar: bytes) -> str:
    """sha256 over each member's (name, type, mode, link, content), in name order: the same
    for the same files whatever their mtimes, and whatever gzip wrote in its header."""
    h = hashlib.sha256()
    with tarfile.open(fileobj=io.BytesIO(tar), mode="r:*") as t:
        for m in sorted(t.getmembers(), key=lambda m: m.name):
            h.update(f"{m.name}\0{m.type!r}\0{m.mode:o}\0{m.linkname}\0{m.size}\0".encode())
            f = t.extractfile(m) if m.isfile() else None
            if f is not None:
                h.update(f.read())
    return h.hexdigest()


@dataclass(frozen=True)
class Shipment:
    """One tree as this command ships it: the tar, its tree digest, the sha256 of the bytes."""

    tree: str  # its directory name under the remote dir
    tar: bytes
    digest: str
    sha: str

    @classmethod
    def of(cls, tree: str, tar: bytes) -> Shipment:
        return cls(tree, tar, tree_digest(tar), hashlib.sha256(tar).hexdigest())


@dataclass(frozen=True)
class ShipState:
    """What a node has of a tree: the digest unpacked there, and (the master) the tar it
    stores for the relay, by tree digest and byte sha256. "" for none."""

    unpacked: str = ""
    stored: str = ""
    stored_sha: str = ""


def _paths(rd: str, tree: str) -> tuple[str, str, str, str]:
    d = f"{rd}/{SHIP_DIR}"
    q = shlex.quote
    return q(d), q(f"{rd}/{tree}"), q(f"{d}/{tree}.sha256"), q(f"{d}/{tree}.tgz")


def state_probe(rd: str, tree: str) -> Probe[ShipState]:
    """One line, `swarm-ship <tree> <unpacked> <stored> <stored sha>`: chained before another
    probe in the same exec (the stop before a run), whose parser reads the last lines."""
    _, dest, rec, tgz = _paths(rd, tree)
    cmd = (
        f"(u=-; s='- -'; [ -d {dest} ] && u=$(cat {rec} 2>/dev/null || echo -); "
        f"[ -f {tgz} ] && s=$(cat {tgz}.sha256 2>/dev/null || echo '- -'); "
        f'echo "{STATE_MARK} {tree} ${{u:--}} $s")'
    )
    return Probe(cmd, lambda out: parse_state(out, tree))


def parse_state(stdout: str, tree: str) -> ShipState:
    for line in stdout.splitlines():
        parts = line.split()
        if parts[:2] == [STATE_MARK, tree] and len(parts) == 5:
            u, s, sha = (p if p != NONE else "" for p in parts[2:])
            return ShipState(u, s, sha)
    return ShipState()


def unpacked_test(rd: str, tree: str, digest: str) -> str:
    """True (exit 0) when the node has this tree unpacked already."""
    _, dest, rec, _ = _paths(rd, tree)
    return f'([ -d {dest} ] && [ "$(cat {rec} 2>/dev/null)" = {shlex.quote(digest)} ])'


def _unpack_from(src: str, rd: str, tree: str, digest: str) -> str:
    """Replace <rd>/<tree> with the tar in `src` (a quoted path), no stale files left; record."""
    d, dest, rec, _ = _paths(rd, tree)
    new = shlex.quote(f"{rd}/{tree}.new")
    # && throughout: `set -e` does nothing inside a list tested by || (as these are).
    return (
        f"mkdir -p {d} && rm -f {rec} && rm -rf {new} && mkdir -p {new} && "
        f"tar -xzf {src} -C {new} && rm -rf {dest} && mv {new} {dest} && "
        f"echo {shlex.quote(digest)} > {rec}"
    )


def receive_cmd(rd: str, s: Shipment, *, unpack: bool = True, store: bool = False) -> str:
    """The tar on stdin: unpack it (and record its digest), and/or store it for the relay."""
    d, _, _, tgz = _paths(rd, s.tree)
    part = shlex.quote(f"{rd}/{SHIP_DIR}/{s.tree}.part")
    steps = [f"mkdir -p {d}", f"cat > {part}"]
    if unpack:
        steps.append(_unpack_from(part, rd, s.tree, s.digest))
    if store:
        steps.append(f"rm -f {tgz}.sha256; mv {part} {tgz}; echo {s.digest} {s.sha} > {tgz}.sha256")
    else:
        steps.append(f"rm -f {part}")
    return "(" + " && ".join(steps) + ")"


def fetch_timeout(size: int) -> int:
    """Seconds a worker gives the relay: inside a network a tar arrives at tens of MB/s, so a
    slow one is a blocked port, and the controller sends the tree itself."""
    return 15 + size // 2_000_000


def fetch_cmd(rd: str, s: Shipment, sha: str, addr: str, port: int) -> str:
    """The token on stdin; fetch the tar from the relay at addr:port, check its sha256, unpack
    and record -> exit FETCH_FAILED when any of it fails (nothing changed then). A node that
    has this tree already skips it all."""
    part = shlex.quote(f"{rd}/{SHIP_DIR}/{s.tree}.part")
    # bash's /dev/tcp: no tool to install on a worker that is not bootstrapped yet.
    get = (
        'read -r tok; exec 3<>"/dev/tcp/$1/$2" || exit 1; printf "%s %s\\n" "$tok" "$4" >&3; '
        'cat <&3 > "$3"'
    )
    sh = f"sha256sum {part} | cut -d' ' -f1"
    return (
        f"{unpacked_test(rd, s.tree, s.digest)} || (mkdir -p {shlex.quote(rd + '/' + SHIP_DIR)} "
        f"&& timeout {fetch_timeout(len(s.tar))} bash -c {shlex.quote(get)} fetch "
        f'{shlex.quote(addr)} {port} {part} {s.tree} && [ "$({sh})" = {shlex.quote(sha)} ] && '
        f"{_unpack_from(part, rd, s.tree, s.digest)} && rm -f {part} "
        f"|| {{ rm -f {part}; exit {FETCH_FAILED}; }})"
    )


# The relay, run on the master with python3 -c: reads the token from stdin, listens (so a
# port in use fails the exec, before any worker tries), then forks: the parent prints the
# child's pid and exits, the child serves `count` tars to token holders or until `life`
# seconds are up, whichever is first. A request is `<token> <tree>`: the tar stored as
# <ship dir>/<tree>.tgz, opened when asked for (the wheelhouse is stored once the relay runs).
RELAY_SCRIPT = r"""
import hmac, os, re, socket, sys, threading, time
bind, port, ship, count, life, pidfile = sys.argv[1:7]
count, life = int(count), float(life)
token = sys.stdin.readline().strip().encode()
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((bind, int(port)))
srv.listen(256)
pid = os.fork()
if pid:
    with open(pidfile, "w") as f:
        f.write(str(pid))
    print("swarm-relay", pid, flush=True)
    os._exit(0)
os.setsid()
null = os.open(os.devnull, os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(null, fd)
served, lock, done = [0], threading.Lock(), threading.Event()

def serve(c):
    try:
        c.settimeout(30)
        got = b""
        while not got.endswith(b"\n") and len(got) < 256:
            chunk = c.recv(256 - len(got))
            if not chunk:
                return
            got += chunk
        tok, _, tree = got.strip().partition(b" ")
        if not hmac.compare_digest(tok, token) or not re.fullmatch(rb"[a-z][a-z0-9-]*", tree):
            return
        with open(os.path.join(ship, tree.decode() + ".tgz"), "rb") as f:
            c.sendfile(f)
        c.shutdown(socket.SHUT_WR)
        with lock:
            served[0] += 1
            if served[0] >= count:
                done.set()
    except OSError:
        pass
    finally:
        c.close()

deadline = time.monotonic() + life
srv.settimeout(0.5)
threads = []
while not done.is_set() and time.monotonic() < deadline:
    try:
        c, _ = srv.accept()
    except OSError:
        continue
    t = threading.Thread(target=serve, args=(c,), daemon=True)
    t.start()
    threads.append(t)
srv.close()
for t in threads:
    t.join(max(0.0, min(30.0, deadline + 30 - time.monotonic())))
try:
    os.unlink(pidfile)
except OSError:
    pass
"""


def _python(rd: str) -> str:
    """python3 from PATH, else the venv bootstrap.sh made on the node."""
    venv = shlex.quote(f"{rd}/venv/bin/python")
    return f'"$(command -v python3 || echo {venv})"'


def relay_cmd(rd: str, tree: str, bind: str, port: int, count: int, life: float) -> str:
    """The token on stdin's first line -> prints `swarm-relay <pid>` once it listens. It
    serves every tree stored in the ship dir; `tree` names its pid file."""
    d, _, _, _ = _paths(rd, tree)
    pidfile = shlex.quote(f"{rd}/{SHIP_DIR}/relay-{tree}.pid")
    return (
        f"{_python(rd)} -c {shlex.quote(RELAY_SCRIPT)} {shlex.quote(bind)} {port} {d} "
        f"{count} {life:.0f} {pidfile}"
    )


def with_token_first(cmd_reading_rest: str, relay: str) -> str:
    """One exec on the master: the token (stdin's first line), then `cmd_reading_rest` reads
    the rest of stdin (a tar), then the relay starts with the token on its stdin (printf is a
    shell builtin: the token is on no command line)."""
    return f'IFS= read -r tok && {cmd_reading_rest} && printf "%s\\n" "$tok" | {relay}'


def parse_relay(stdout: str) -> int | None:
    """The relay's pid, None when it did not start."""
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == RELAY_MARK and parts[1].isdigit():
            return int(parts[1])
    return None


def stop_relay_cmd(rd: str, tree: str, pid: int) -> str:
    """Kill the relay by pid, only while its pid file still names it (no reused pid)."""
    pidfile = shlex.quote(f"{rd}/{SHIP_DIR}/relay-{tree}.pid")
    return (
        f'[ "$(cat {pidfile} 2>/dev/null)" = {pid} ] && kill {pid} 2>/dev/null; '
        f"rm -f {pidfile}; true"
    )
