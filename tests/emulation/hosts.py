"""Emulated SSH hosts: one network namespace + one real sshd per host.

``Lab`` owns a Linux bridge holding the first address of a subnet (default
10.77.1.1/24) in the *current* network namespace -- which is the throw-away
lab namespace when the suite runs through ``tests/run_in_lab.py``.  Each
``Lab.add_host(ip, key)`` creates (see /work/shared/TESTING.md):

* a network namespace ``<prefix>h<n>`` with ``lo`` and ``eth0`` (a veth whose
  other end ``<prefix>v<n>`` is enslaved to the bridge), the host IP on
  ``eth0``, IPv6 off and **no default route**;
* inside it ``unshare --mount --uts --pid --fork --kill-child --mount-proc``
  running a tiny ``sh`` init (PID 1 of the host) which
  - bind-mounts a per-host ``etc-ssh`` dir over ``/etc/ssh`` (host key,
    sshd_config), a per-host home over ``/root`` and a per-host dir over
    ``/tmp``; paths the venv's Python needs that live under ``/root`` or
    ``/tmp`` (e.g. ``/root/.pyenv``) are bound back at the same place first,
  - sets the hostname (``ip-10-77-1-4`` like EC2),
  - starts ``sshd -D -e`` (its log goes to ``Host.log_path``) and then just
    reaps orphans (``sleep`` + ``wait``), so killing/restarting sshd never
    tears the host down.

Stopping a host = SIGKILL the ``unshare`` process: its child (the init) gets
SIGKILL through ``--kill-child`` and the kernel kills the whole PID namespace.

Everything created is named from a per-process prefix ``sw<pid><letter>``
(interface names stay <= 15 chars) and removed by exactly those names.

Host.exec() uses ``nsenter`` into the PID, mount, UTS and network namespaces
of the host's init, so commands see the host's /root, /tmp, processes and
network exactly like an SSH session would (but without sshd).

Notes / gotchas:
* ``/etc/ssh`` is per host (``Host.etc_ssh``; ssh_config and moduli are
  copied in), the authorized key is ``/root/.ssh/authorized_keys`` in the
  host = ``Host.home/.ssh/authorized_keys`` on the controller.
* Re-bound paths leave an empty mount-point directory in ``Host.home``
  (e.g. ``.pyenv``) when seen from the controller.
* The ``unshare`` processes get PDEATHSIG=SIGKILL (``setpriv``), forked from
  one long-lived thread, so a test process that dies hard takes its hosts
  with it; netns names/dirs are also registered for ``run_in_lab.py``.
* All waits are polls bounded in time and count (READY_TIMEOUT,
  STOP_TIMEOUT).
"""

from __future__ import annotations

import atexit
import ipaddress
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from queue import Queue
from typing import Callable, Iterable

SSHD = "/usr/sbin/sshd"
DEFAULT_SUBNET = "10.77.1.0/24"
READY_TIMEOUT = 10.0  # seconds a host may take to answer with an SSH banner
STOP_TIMEOUT = 5.0
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEAD_MODES = ("silent", "refuse", "blackhole")
READY_LINE = "swarm-lab: host init ready"
INIT_IDLE = "sleep 3600"  # what the host's init waits on (reaping orphans)

_lab_letters = iter("abcdefghijklmnopqrstuvwxyz")
_lab_letters_lock = threading.Lock()


class LabError(RuntimeError):
    pass


# --------------------------------------------------------------------------
# small helpers


def _run(args: list[str], *, input: str | None = None, timeout: float = 20.0,
         check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, input=input, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise LabError(f"{shlex.join(args)} failed ({proc.returncode}): "
                       f"{proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def _ip_batch(lines: Iterable[str], *, netns: str | None = None,
              force: bool = False, check: bool = True) -> subprocess.CompletedProcess:
    args = ["ip"]
    if netns:
        args += ["-n", netns]
    if force:
        args.append("-force")
    args += ["-batch", "-"]
    return _run(args, input="\n".join(lines) + "\n", check=check)


def _b36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


def _alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return False
    state = stat[stat.rfind(b")") + 2:][:1]
    return state not in (b"Z", b"X")


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(x) for x in fh.read().split()]
    except OSError:
        return []


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            raw = fh.read()
    except OSError:
        return ""
    return raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
        return int(stat[stat.rfind(b")") + 2:].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


def _ns_id(pid: int, kind: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None


def _controller_mounts() -> list[str]:
    try:
        with open("/proc/self/mountinfo") as fh:
            return [line.split()[4] for line in fh]
    except OSError:
        return []


def _safe_rmtree(path: Path) -> None:
    """Remove a directory we created, refusing if anything is mounted in it."""
    if not path.exists():
        return
    real = os.path.realpath(path)
    for mnt in _controller_mounts():
        if mnt == real or mnt.startswith(real + "/"):
            raise LabError(f"refusing to delete {path}: {mnt} is mounted inside")
    shutil.rmtree(path, ignore_errors=True)


def banner_ready(ip: str, port: int = 22, timeout: float = 0.5) -> bool:
    """One probe: does ip:port answer with an SSH banner?"""
    try:
        with socket.create_connection((ip, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def _tcp_accepts(ip: str, port: int = 22, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=timeout):
            return True
    except OSError:
        return False


def _pdeathsig_prefix() -> list[str]:
    """``setpriv --pdeathsig KILL --`` when available (util-linux >= 2.33)."""
    global _PDEATH
    if _PDEATH is None:
        path = shutil.which("setpriv")
        ok = False
        if path:
            try:
                out = subprocess.run([path, "--help"], capture_output=True,
                                     text=True, timeout=5).stdout
                ok = "--pdeathsig" in out
            except (OSError, subprocess.SubprocessError):
                ok = False
        _PDEATH = [path, "--pdeathsig", "KILL", "--"] if ok else []
    return list(_PDEATH)


_PDEATH: list[str] | None = None


class _Spawner:
    """Starts host processes from one long-lived thread.

    The ``unshare`` processes get PR_SET_PDEATHSIG=SIGKILL (via ``setpriv``),
    which fires when the *thread* that forked them exits.  Requests arrive on
    short-lived moto server threads, so forking is funnelled through this
    daemon thread, which lives as long as the test process: if pytest dies
    hard, every emulated host dies with it.
    """

    def __init__(self) -> None:
        self._queue: Queue = Queue()
        self._thread = threading.Thread(target=self._loop, name="swarm-lab-spawner",
                                        daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            fn, fut = self._queue.get()
            try:
                fut.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to caller
                fut.set_exception(exc)

    def call(self, fn: Callable, timeout: float = 30.0):
        fut: Future = Future()
        self._queue.put((fn, fut))
        return fut.result(timeout)


_spawner: _Spawner | None = None
_spawner_lock = threading.Lock()


def _spawn(fn: Callable):
    global _spawner
    with _spawner_lock:
        if _spawner is None:
            _spawner = _Spawner()
    return _spawner.call(fn)


def python_paths(venv: Path) -> set[Path]:
    """Paths that must stay visible on a host for ``venv`` to work."""
    paths = {Path(os.path.abspath(venv))}
    cfg = venv / "pyvenv.cfg"
    if cfg.exists():
        for line in cfg.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() in ("home", "executable", "base-executable") and value.strip():
                home = Path(value.strip())
                paths.add(home)
                paths.add(home.parent)
    for exe in ("python", "python3"):
        candidate = venv / "bin" / exe
        if candidate.exists():
            real = Path(os.path.realpath(candidate))
            paths.add(real.parent.parent)
    paths.add(Path(sys.base_prefix))
    paths.add(Path(os.path.realpath(sys.executable)).parent.parent)
    return {Path(os.path.abspath(p)) for p in paths}


# --------------------------------------------------------------------------
# Host


@dataclass
class Host:
    """One emulated machine.  ``home`` is the controller-side directory the
    host sees as ``/root``; ``tmp`` the one it sees as ``/tmp``."""

    name: str
    ip: str
    netns: str
    veth: str
    dir: Path
    home: Path
    tmp: Path
    etc_ssh: Path
    log_path: Path
    host_key_pub: str
    dead: str | None = None
    pid: int | None = None  # the `unshare` process (controller's PID namespace)
    init_pid: int | None = None  # PID 1 of the host, as the controller sees it
    lab: "Lab | None" = field(default=None, repr=False)
    _proc: subprocess.Popen | None = field(default=None, repr=False)
    _removed: bool = field(default=False, repr=False)
    _ready_seen: bool = field(default=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # -- lifecycle ---------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.init_pid is not None and _alive(self.init_pid)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Power off: SIGKILL the unshare process; its child (the host's PID 1)
        gets SIGKILL via --kill-child and the kernel kills the whole PID
        namespace.  The network namespace and files stay until remove().
        A stopped host cannot be started again."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                raise LabError(f"{self.name}: unshare pid {proc.pid} did not die")
        if self.init_pid is not None:
            deadline = time.monotonic() + timeout
            for _ in range(int(timeout / 0.01) + 1):
                if not _alive(self.init_pid) or time.monotonic() > deadline:
                    break
                time.sleep(0.01)
            if _alive(self.init_pid):
                raise LabError(f"{self.name}: init pid {self.init_pid} still alive")

    def remove(self) -> None:
        """stop(), then delete the veth, the network namespace and the host's
        directory.  Idempotent."""
        with self._lock:
            if self._removed:
                return
            self.stop()
            _ip_batch([f"link del {self.veth}", f"netns del {self.netns}"],
                      force=True, check=False)
            if self.lab is not None:
                self.lab._unregister_netns(self.netns)
            _safe_rmtree(self.dir)
            self._removed = True
        if self.lab is not None:
            self.lab._forget(self)

    # -- inside the host ---------------------------------------------------

    def _nsenter(self) -> list[str]:
        if not self.running:
            raise LabError(f"{self.name} ({self.ip}) is not running")
        return ["nsenter", "--target", str(self.init_pid), "--pid", "--mount",
                "--uts", "--net", "--wdns=/root", "--"]

    def exec(self, cmd: str | list[str], *, timeout: float = 60.0,
             input: str | None = None, check: bool = False) -> subprocess.CompletedProcess:
        """Run ``cmd`` inside the host (nsenter into its pid/mount/uts/net
        namespaces), as root, cwd /root, PATH = venv bin + system PATH."""
        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        env = {"HOME": "/root", "USER": "root", "LOGNAME": "root",
               "PATH": self.lab.session_path if self.lab else SYSTEM_PATH,
               "LANG": os.environ.get("LANG", "C.UTF-8")}
        return subprocess.run(self._nsenter() + argv, capture_output=True,
                              text=True, timeout=timeout, env=env, input=input,
                              check=check)

    def pids(self, *, include_init: bool = False) -> list[int]:
        """PIDs (controller view) of the live processes in the host's PID
        namespace -- without the host's init and its idle ``sleep`` unless
        ``include_init``."""
        if self.init_pid is None:
            return []
        ns = _ns_id(self.init_pid, "pid")
        if ns is None:
            return []
        out = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            if _ns_id(pid, "pid") != ns or not _alive(pid):
                continue
            if not include_init and (pid == self.init_pid or (
                    _ppid(pid) == self.init_pid and _cmdline(pid) == INIT_IDLE)):
                continue
            out.append(pid)
        return sorted(out)

    @property
    def known_hosts_line(self) -> str:
        """``<ip> <type> <base64>`` for a known_hosts file."""
        keytype, b64 = self.host_key_pub.split()[:2]
        return f"{self.ip} {keytype} {b64}"

    def memory_pss_kib(self) -> int:
        """Proportional set size of everything running on the host (KiB),
        including its init and the unshare process."""
        total = 0
        for pid in self.pids(include_init=True) + ([self.pid] if self.pid else []):
            try:
                with open(f"/proc/{pid}/smaps_rollup") as fh:
                    for line in fh:
                        if line.startswith("Pss:"):
                            total += int(line.split()[1])
                            break
            except OSError:
                pass
        return total

    def processes(self, pattern: str = "") -> list[str]:
        """Command lines of live processes on this host containing ``pattern``
        (the host's init ``sh`` and its idle ``sleep`` are not listed; sshd
        and SSH sessions are)."""
        result = []
        for pid in self.pids():
            cmd = _cmdline(pid)
            if cmd and pattern in cmd:
                result.append(cmd)
        return result

    def _sshd_listeners(self) -> list[int]:
        # sshd re-titles itself "sshd: /usr/sbin/sshd -D ... [listener] ..."
        out = []
        for pid in self.pids():
            cmd = _cmdline(pid)
            if _ppid(pid) == self.init_pid and (
                    cmd.startswith(f"{SSHD} -D") or cmd.startswith(f"sshd: {SSHD} -D")):
                out.append(pid)
        return out

    def kill_sshd(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the listening sshd (the host and its other processes stay;
        already open SSH sessions survive, new connections are refused)."""
        for pid in self._sshd_listeners():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.02) + 1):
            if not self._sshd_listeners() or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        if self._sshd_listeners():
            raise LabError(f"{self.name}: sshd did not die")

    def start_sshd(self, timeout: float = READY_TIMEOUT) -> None:
        """(Re)start sshd inside the host; it is re-parented to the host's init
        and logs to the same log file.  Waits for the banner."""
        if self._sshd_listeners():
            return
        script = (f"{SSHD} -D -e -f /etc/ssh/sshd_config </dev/null >/dev/null "
                  f"2>>/proc/1/fd/2 &")
        proc = subprocess.run(self._nsenter() + ["sh", "-c", script],
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise LabError(f"{self.name}: cannot start sshd: {proc.stderr}")
        self.dead = None
        self.wait_ready(timeout)

    def regen_host_key(self, timeout: float = READY_TIMEOUT) -> str:
        """Replace the host key and restart sshd; returns the new public key."""
        self.kill_sshd()
        key = self.etc_ssh / "ssh_host_ed25519_key"
        for path in (key, key.with_name(key.name + ".pub")):
            path.unlink(missing_ok=True)
        self.host_key_pub = _keygen(key, self.name)
        self.start_sshd(timeout)
        return self.host_key_pub

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Poll (bounded) until the host answers: SSH banner for a normal
        host, an accepted TCP connection for a ``silent`` dead one; other
        dead modes only wait for the init to be up."""
        deadline = time.monotonic() + timeout
        attempts = int(timeout / 0.02) + 1
        for _ in range(attempts):
            if self._proc is not None and self._proc.poll() is not None:
                raise LabError(f"{self.name}: host init exited "
                               f"({self._proc.returncode}); log:\n{self.log_tail()}")
            if self.init_pid is None:
                kids = _children(self._proc.pid) if self._proc else []
                if kids:
                    self.init_pid = kids[0]
            if self.init_pid is not None:
                if not self._init_done():
                    pass
                elif self.dead in ("refuse", "blackhole"):
                    return
                elif self.dead == "silent":
                    if _tcp_accepts(self.ip, 22, 0.3):
                        return
                elif banner_ready(self.ip, 22, 0.5):
                    return
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        raise LabError(f"{self.name} ({self.ip}) not ready after {timeout}s; "
                       f"log:\n{self.log_tail()}")

    def _init_done(self) -> bool:
        if self._ready_seen:
            return True
        try:
            self._ready_seen = READY_LINE.encode() in self.log_path.read_bytes()
        except OSError:
            return False
        return self._ready_seen

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _keygen(path: Path, comment: str) -> str:
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    return path.with_name(path.name + ".pub").read_text().strip()


# --------------------------------------------------------------------------
# Lab

_SSHD_CONFIG = """\
# emulated host {name} ({ip}) -- generated by tests/emulation/hosts.py
Port 22
ListenAddress {ip}
AddressFamily inet
HostKey /etc/ssh/ssh_host_ed25519_key
AuthorizedKeysFile .ssh/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
PidFile none
MaxStartups 200:30:400
MaxSessions 64
LoginGraceTime 30
LogLevel VERBOSE
PrintMotd no
X11Forwarding no
AllowTcpForwarding yes
AcceptEnv LANG LC_*
Subsystem sftp internal-sftp
SetEnv PATH={path}
"""

# PID 1 of every host.  Runs inside the new mount/uts/pid namespaces (and the
# host's network namespace).  Its stdout/stderr is the host log file.
_INIT = """\
set -e
echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6 2>/dev/null || true
echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6 2>/dev/null || true
ip -batch - <<EOF
link set lo up
addr add {ip}/{prefixlen} dev eth0
link set eth0 up
{extra_ip}
EOF
mount --bind {etc_ssh} /etc/ssh
{keep_binds}
mount --rbind {home} /root
mount --rbind {tmp} /tmp
hostname {name}
{service}
echo "{ready}"
set +e
trap '' HUP INT TERM
while :; do {idle} & wait $!; done
"""


class Lab:
    """A bridge plus emulated hosts in the current network namespace."""

    def __init__(self, subnet: str = DEFAULT_SUBNET, *, venv: str | Path | None = None,
                 prefix: str | None = None, base_dir: str | Path | None = None,
                 extra_keep: Iterable[str | Path] = ()):
        self.subnet = ipaddress.ip_network(subnet)
        if self.subnet.version != 4:
            raise LabError("only IPv4 subnets are supported")
        self.bridge_ip = str(next(self.subnet.hosts()))
        self.venv = Path(venv) if venv else Path(sys.executable).parent.parent
        self.venv_bin = self.venv / "bin"
        self.session_path = f"{self.venv_bin}:{SYSTEM_PATH}"
        if prefix is None:
            with _lab_letters_lock:
                try:
                    letter = next(_lab_letters)
                except StopIteration:
                    raise LabError("too many labs in one process") from None
            prefix = f"sw{os.getpid()}{letter}"
        if len(prefix) > 10:
            raise LabError(f"prefix {prefix!r} too long (max 10 chars)")
        self.prefix = prefix
        self.bridge = f"{prefix}br"
        self.hosts: dict[str, Host] = {}
        self._counter = 0
        self._lock = threading.RLock()
        self._closed = False
        self.registry = Path(os.environ["SWARM_LAB_REGISTRY"]) \
            if os.environ.get("SWARM_LAB_REGISTRY") else None
        self.base_dir = Path(tempfile.mkdtemp(prefix=f"swarmlab-{prefix}-",
                                              dir=str(base_dir) if base_dir else None))
        os.chmod(self.base_dir, 0o755)
        entry = self._registry_entry("dirs", prefix)
        if entry is not None:
            try:
                entry.write_text(str(self.base_dir))
            except OSError:
                pass
        self._keep = [Path(p) for p in extra_keep]
        self._keep_paths = sorted(python_paths(self.venv) | set(self._keep))
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        ref = weakref.ref(self)

        def _close_at_exit() -> None:  # safety net; unregistered by close()
            lab = ref()
            if lab is not None:
                try:
                    lab.close()
                except Exception as exc:  # noqa: BLE001
                    print(f"swarm lab cleanup: {exc}", file=sys.stderr)

        self._atexit_cb = _close_at_exit
        atexit.register(_close_at_exit)
        try:
            # A fixed MAC: else the bridge takes its lowest port's MAC, which changes when a
            # host is added or removed, and the other hosts' ARP entry for the bridge IP (the
            # target) goes stale: their load stalls for ~30 s after any other host comes or goes.
            _ip_batch([f"link add {self.bridge} type bridge",
                       f"link set {self.bridge} address 02:77:00:00:00:01",
                       f"addr add {self.bridge_ip}/{self.subnet.prefixlen} dev {self.bridge}",
                       f"link set {self.bridge} up"])
            try:
                Path(f"/proc/sys/net/ipv6/conf/{self.bridge}/disable_ipv6").write_text("1")
            except OSError:
                pass
        except BaseException:
            self.close()
            raise

    # -- context manager ----------------------------------------------------

    def __enter__(self) -> "Lab":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- registry (lets run_in_lab.py sweep our netns if we die hard) -------

    def _registry_entry(self, kind: str, name: str) -> Path | None:
        if self.registry is None:
            return None
        return self.registry / kind / name

    def _register_netns(self, name: str) -> None:
        entry = self._registry_entry("netns", name)
        if entry is not None:
            try:
                entry.touch()
            except OSError:
                pass

    def _unregister_netns(self, name: str) -> None:
        entry = self._registry_entry("netns", name)
        if entry is not None:
            entry.unlink(missing_ok=True)

    # -- hosts --------------------------------------------------------------

    def free_ip(self, start: int = 100) -> str:
        """First address of the subnet at offset >= ``start`` without a host."""
        with self._lock:
            for offset in range(start, self.subnet.num_addresses - 1):
                ip = str(self.subnet.network_address + offset)
                if ip != self.bridge_ip and ip not in self.hosts:
                    return ip
        raise LabError("no free address left in the lab subnet")

    def _keep_binds(self, home: Path, tmp: Path) -> list[str]:
        """mount commands re-binding venv/python paths hidden by /root, /tmp."""
        lines = []
        for target, source in (("/root", home), ("/tmp", tmp)):
            tops = set()
            for path in self._keep_paths:
                try:
                    rel = path.relative_to(target)
                except ValueError:
                    continue
                if rel.parts:
                    tops.add(rel.parts[0])
            for top in sorted(tops):
                orig = Path(target) / top
                if not orig.exists():
                    continue
                mountpoint = source / top
                if orig.is_dir():
                    mountpoint.mkdir(exist_ok=True)
                else:
                    mountpoint.touch()
                lines.append(f"mount --rbind {shlex.quote(str(orig))} "
                             f"{shlex.quote(str(mountpoint))}")
        return lines

    def add_host(self, ip: str | None = None, authorized_key: str = "",
                 name: str | None = None, *, dead: bool | str = False,
                 wait: bool = True, timeout: float = READY_TIMEOUT) -> Host:
        """Create a host answering SSH at ``ip`` for ``authorized_key``.

        ``dead``: False (normal), True/"silent" (TCP accepted, never a
        banner), "refuse" (nothing listens: connection refused), "blackhole"
        (the host drops every outgoing packet: connects time out).
        """
        if dead is True:
            dead = "silent"
        if dead and dead not in DEAD_MODES:
            raise LabError(f"dead must be one of {DEAD_MODES}, not {dead!r}")
        with self._lock:
            if self._closed:
                raise LabError("lab is closed")
            if ip is None:
                ip = self.free_ip()
            addr = ipaddress.ip_address(ip)
            if addr not in self.subnet or str(addr) == self.bridge_ip \
                    or addr in (self.subnet.network_address, self.subnet.broadcast_address):
                raise LabError(f"{ip} is not a usable host address of {self.subnet}")
            if ip in self.hosts:
                raise LabError(f"a host already has {ip}")
            n = _b36(self._counter)
            self._counter += 1
            netns, veth = f"{self.prefix}h{n}", f"{self.prefix}v{n}"
            host_name = name or f"ip-{ip.replace('.', '-')}"
            hdir = self.base_dir / f"h{n}"
            # reserve the address while we build
            host = Host(name=host_name, ip=ip, netns=netns, veth=veth, dir=hdir,
                        home=hdir / "root", tmp=hdir / "tmp", etc_ssh=hdir / "etc-ssh",
                        log_path=hdir / "sshd.log", host_key_pub="",
                        dead=dead or None, lab=self)
            self.hosts[ip] = host
        try:
            self._build(host, authorized_key)
            if wait:
                host.wait_ready(timeout)
        except BaseException:
            try:
                host.remove()
            except Exception:  # noqa: BLE001 - keep the original error
                pass
            raise
        return host

    def _build(self, host: Host, authorized_key: str) -> None:
        for d in (host.dir, host.home, host.tmp, host.etc_ssh):
            d.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.chmod(host.home, 0o700)
        os.chmod(host.tmp, 0o1777)
        ssh_dir = host.home / ".ssh"
        ssh_dir.mkdir(mode=0o700)
        auth = ssh_dir / "authorized_keys"
        auth.write_text(authorized_key.strip() + "\n" if authorized_key.strip() else "")
        os.chmod(auth, 0o600)
        host.host_key_pub = _keygen(host.etc_ssh / "ssh_host_ed25519_key", host.name)
        (host.etc_ssh / "sshd_config").write_text(
            _SSHD_CONFIG.format(name=host.name, ip=host.ip, path=self.session_path))
        for extra in ("moduli", "ssh_config"):
            src = Path("/etc/ssh") / extra
            if src.is_file():
                shutil.copyfile(src, host.etc_ssh / extra)

        if host.dead == "silent":
            service = (f"{shlex.quote(sys.executable)} -I -S -c "
                       + shlex.quote("import socket,time\n"
                                     "s=socket.socket()\n"
                                     "s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
                                     f"s.bind(({host.ip!r},22))\n"
                                     "s.listen(1024)\n"
                                     "time.sleep(10**9)\n")
                       + " </dev/null >/dev/null &")
        elif host.dead:
            service = ": no service -- dead host"
        else:
            service = f"{SSHD} -D -e -f /etc/ssh/sshd_config </dev/null >/dev/null &"
        extra_ip = "rule add prio 1 blackhole" if host.dead == "blackhole" else ""
        script = _INIT.format(
            ip=host.ip, prefixlen=self.subnet.prefixlen, extra_ip=extra_ip,
            etc_ssh=shlex.quote(str(host.etc_ssh)),
            keep_binds="\n".join(self._keep_binds(host.home, host.tmp)),
            home=shlex.quote(str(host.home)), tmp=shlex.quote(str(host.tmp)),
            name=shlex.quote(host.name), service=service, ready=READY_LINE,
            idle=INIT_IDLE)
        init = host.dir / "init.sh"
        init.write_text(script)

        self._register_netns(host.netns)
        _ip_batch([f"netns add {host.netns}",
                   f"link add {host.veth} type veth peer name eth0 netns {host.netns}",
                   f"link set {host.veth} master {self.bridge} up"])
        try:
            Path(f"/proc/sys/net/ipv6/conf/{host.veth}/disable_ipv6").write_text("1")
        except OSError:
            pass

        argv = _pdeathsig_prefix() + [
            "ip", "netns", "exec", host.netns,
            "unshare", "--mount", "--propagation", "private", "--uts", "--pid",
            "--fork", "--kill-child=SIGKILL", "--mount-proc",
            "sh", str(init)]

        def start() -> subprocess.Popen:
            with open(host.log_path, "ab") as log:
                return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=log, start_new_session=True,
                                        close_fds=True, cwd="/")

        host._proc = _spawn(start)
        host.pid = host._proc.pid

    def add_hosts(self, specs: Iterable[dict], timeout: float = READY_TIMEOUT) -> list[Host]:
        """Create several hosts, then wait for all of them (faster than one by
        one).  Each spec is the kwargs of ``add_host``."""
        hosts = []
        try:
            for spec in specs:
                hosts.append(self.add_host(**{**spec, "wait": False}))
            for host in hosts:
                host.wait_ready(timeout)
        except BaseException:
            for host in hosts:
                try:
                    host.remove()
                except Exception:  # noqa: BLE001
                    pass
            raise
        return hosts

    def _forget(self, host: Host) -> None:
        with self._lock:
            if self.hosts.get(host.ip) is host:
                del self.hosts[host.ip]

    def remove_host(self, ip: str) -> None:
        host = self.hosts.get(ip)
        if host is not None:
            host.remove()

    def remove_all(self) -> None:
        errors = []
        for host in list(self.hosts.values()):
            try:
                host.remove()
            except Exception as exc:  # noqa: BLE001
                errors.append(f"{host.name}: {exc}")
        if errors:
            raise LabError("; ".join(errors))

    def close(self) -> None:
        """Remove every host, then the bridge and the lab directory.
        Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        errors = []
        try:
            self.remove_all()
        except LabError as exc:
            errors.append(str(exc))
        _run(["ip", "link", "del", self.bridge], check=False)
        try:
            _safe_rmtree(self.base_dir)
            entry = self._registry_entry("dirs", self.prefix)
            if entry is not None:
                entry.unlink(missing_ok=True)
        except LabError as exc:
            errors.append(str(exc))
        atexit.unregister(self._atexit_cb)
        if errors:
            raise LabError("; ".join(errors))

    # -- introspection used by tests ---------------------------------------

    def leftovers(self) -> dict[str, list[str]]:
        """Anything still existing with this lab's prefix (should be empty
        after close())."""
        netns = []
        if os.path.isdir("/run/netns"):
            netns = [n for n in os.listdir("/run/netns") if n.startswith(self.prefix)]
        links = [n for n in os.listdir("/sys/class/net") if n.startswith(self.prefix)]
        procs = []
        marker = str(self.base_dir)
        for entry in os.listdir("/proc"):
            if entry.isdigit() and marker in _cmdline(int(entry)):
                procs.append(f"{entry} {_cmdline(int(entry))}")
        return {"netns": netns, "links": links, "processes": procs,
                "dirs": [str(self.base_dir)] if self.base_dir.exists() else []}

