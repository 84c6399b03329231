"""Emulated SSH hosts: one network namespace + one real sshd per host, made by
``Lab.add_host`` (see lab.py).

Stopping a host = SIGKILL the ``unshare`` process: its child (the init) gets
SIGKILL through ``--kill-child`` and the kernel kills the whole PID namespace: its sockets
send FIN/RST at once. ``power_cut()`` is a power-off as peers see one: the host's link goes
down first, so it goes silent and their connections hang until their own timeouts.

Host.exec() uses ``nsenter`` into the PID, mount, UTS and network namespaces
of the host's init, so commands see the host's /root, /tmp, processes and
network exactly like an SSH session would (but without sshd).

Notes / gotchas:
* Each host has a root of its own (rootfs.py): what it writes anywhere lands in
  ``Host.layer`` (the overlay's upper dir) and is deleted with it.
* ``/etc/ssh`` is per host (``Host.etc_ssh``; ssh_config and moduli are
  copied in), the authorized key is ``/root/.ssh/authorized_keys`` in the
  host = ``Host.home/.ssh/authorized_keys`` on the controller; with a login ``user``
  (``Lab.add_host(user="ubuntu")``) it is that user's (``Host.login_home``), and root's
  refuses the key as EC2 images do.
* Re-bound paths leave an empty mount-point directory in ``Host.home``
  (e.g. ``.pyenv``) when seen from the controller.
* All waits are polls bounded in time and count (READY_TIMEOUT,
  STOP_TIMEOUT).
* ``private`` dirs (``Lab.add_host(private_dirs=...)``): an empty per-host dir bound over a
  machine path (e.g. ``/var/lib/dpkg``, or ``/usr/local/sbin`` as a layer of stub commands
  first on PATH), so the host's apt locks or tools are its own, never the machine's.
* ``sshd_delay``: sshd starts that many seconds after the init, refusing connections until
  then (an EC2 instance ``running`` while it still boots); such a host is ready once its
  init is.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .power import PowerCall
from .power import calls as power_calls
from .proc import (LabError, _alive, _children, _cmdline, _ip_batch, _ns_id, _ppid, _run,
                   _safe_rmtree, wait_mount_ns_gone)

if TYPE_CHECKING:
    from .lab import Lab

SSHD = "/usr/sbin/sshd"
READY_TIMEOUT = 10.0  # seconds a host may take to answer with an SSH banner
STOP_TIMEOUT = 5.0
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
READY_LINE = "swarm-lab: host init ready"
INIT_IDLE = "sleep 3600"  # what the host's init waits on (reaping orphans)


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
    env: dict[str, str] = field(default_factory=dict)  # its sessions' env, over the lab's PATH
    private: dict[str, Path] = field(default_factory=dict)  # machine path -> per-host dir
    sshd_delay: float = 0.0
    sshd_options: dict[str, str] = field(default_factory=dict)  # over boot.py's sshd_config
    power_broken: bool = False  # stub shutdown fails and /run is read-only (power.py)
    bare: bool = False  # only the system's PATH and Python: the lab's venv is hidden (lab.py)
    own_root: bool = True  # an overlay root of its own (rootfs.py); False only to prove a leak
    user: str = "root"  # who logs in with the authorized key
    sudo: bool = True  # ...with passwordless sudo (when not root)
    hidden: tuple[str, ...] = ()  # machine paths the host does not have (whiteouts)
    firewalled: bool = False  # its security groups filter what reaches it (firewall.py)
    public_ip: str | None = None  # owned by its second NIC, eth1, on `public_bridge` (lab.py)
    public_bridge: str | None = None
    public_veth: str | None = None
    pid: int | None = None  # the `unshare` process (controller's PID namespace)
    init_pid: int | None = None  # PID 1 of the host, as the controller sees it
    lab: "Lab | None" = field(default=None, repr=False)
    _proc: subprocess.Popen | None = field(default=None, repr=False)
    _removed: bool = field(default=False, repr=False)
    _ready_seen: bool = field(default=False, repr=False)
    _mnt_ns: str | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # -- its own root ------------------------------------------------------

    @property
    def layer(self) -> Path:
        """The host's own layer (the overlay's upper dir): every file it wrote."""
        return self.dir / "layer"

    @property
    def workdir(self) -> Path:
        return self.dir / "layer-work"

    @property
    def rootfs(self) -> Path:
        """Where the init mounts the merged root (empty seen from the controller)."""
        return self.dir / "rootfs"

    @property
    def root_dirs(self) -> tuple[Path, ...]:
        return (self.layer, self.workdir, self.rootfs) if self.own_root else ()

    @property
    def login_home(self) -> Path:
        """The login user's home, controller side."""
        return self.home if self.user == "root" else self.layer / "home" / self.user

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

    def power_cut(self, timeout: float = STOP_TIMEOUT) -> float:
        """Power off as a machine loses power: silent first -- its link down on the bridge
        side, so nothing it sends reaches anyone and nothing sent to it is answered -- and
        only then its processes killed, so their FIN/RST never leave: peers' connections hang
        until their own timeouts, as with a real power cut (stop() alone is a clean kill).
        -> the monotonic time of the cut."""
        _ip_batch([f"link set {self.veth} down"])
        cut = time.monotonic()
        self.stop(timeout)
        return cut

    def remove(self) -> None:
        """stop(), then delete the veth, the network namespace and the host's
        directory.  Idempotent."""
        with self._lock:
            if self._removed:
                return
            self.stop()
            # The neighbour entry too: the next host given this IP (as EC2 reuses freed
            # addresses) has another MAC, and a stale entry would blackhole it for seconds.
            public = [] if self.public_ip is None else [
                f"link del {self.public_veth}", f"route del {self.public_ip}/32 dev "
                f"{self.public_bridge}", f"neigh flush to {self.public_ip}"]
            _ip_batch([f"link del {self.veth}", *public, f"netns del {self.netns}",
                       f"neigh flush to {self.ip}"], force=True, check=False)
            if self.lab is not None:
                self.lab._unregister_netns(self.netns)
            try:
                wait_mount_ns_gone(self._mnt_ns, str(self.dir))
                _safe_rmtree(self.dir)
            finally:
                # Its network is gone either way: the address is free for the next host (EC2
                # reuses them), or one directory kept too long would fail every later test
                # given that IP. The error still names what was left.
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
               "PATH": self.lab.session_path if self.lab and not self.bare else SYSTEM_PATH,
               "LANG": os.environ.get("LANG", "C.UTF-8"), **self.env}
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

    def power_calls(self) -> list[PowerCall]:
        """What the host's stub `shutdown`/`poweroff` was asked, oldest first (power.py)."""
        return power_calls(self.home)

    @property
    def known_hosts_line(self) -> str:
        """``<ip> <type> <base64>`` for a known_hosts file."""
        return self.known_hosts_line_at(self.ip)

    def known_hosts_line_at(self, address: str) -> str:
        """The known_hosts line of its key at another of its addresses (``public_ip``)."""
        keytype, b64 = self.host_key_pub.split()[:2]
        return f"{address} {keytype} {b64}"

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
        killed = self._sshd_listeners()
        for pid in killed:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.02) + 1):
            # Gone, or a zombie: a dying process's cmdline reads empty once its memory is
            # released, before its files (the listening socket) are closed; on a busy machine
            # a connect in between was accepted.
            if not any(_alive(p) for p in killed) and not self._sshd_listeners():
                break
            if time.monotonic() > deadline:
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
        dead modes and a late sshd only wait for the init to be up."""
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
                    self._mnt_ns = _ns_id(self.init_pid, "mnt")
            if self.init_pid is not None:
                if not self._init_done():
                    pass
                elif self.dead in ("refuse", "blackhole") or self.sshd_delay:
                    return
                elif self.firewalled:
                    # its security group may keep this machine out: ask its own kernel
                    if self._listens(22):
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

    def _listens(self, port: int) -> bool:
        """A TCP socket in LISTEN on `port` in the host's network namespace (its
        /proc/net/tcp, read from here: no exec, no packet)."""
        try:
            text = Path(f"/proc/{self.init_pid}/net/tcp").read_text()
        except OSError:
            return False
        want = f":{port:04X}"
        return any(f[1].endswith(want) and f[3] == "0A"
                   for f in (line.split() for line in text.splitlines()[1:]) if len(f) > 3)

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
