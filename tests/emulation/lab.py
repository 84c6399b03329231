"""The lab: a bridge plus emulated SSH hosts (host.py) in the current network
namespace.

``Lab`` owns a Linux bridge holding the first address of a subnet (default
10.77.1.1/24) in the *current* network namespace -- which is the throw-away
lab namespace when the suite runs through ``tests/run_in_lab.py``.  Each
``Lab.add_host(ip, key)`` creates (see /work/shared/TESTING.md):

* a network namespace ``<prefix>h<n>`` with ``lo`` and ``eth0`` (a veth whose
  other end ``<prefix>v<n>`` is enslaved to the bridge), the host IP on
  ``eth0``, IPv6 off and **no default route**;
* inside it ``unshare --mount --uts --pid --fork --kill-child --mount-proc``
  running a tiny ``sh`` init (PID 1 of the host, see boot.py) that sets up
  the host's own root (rootfs.py: an overlay of this machine's, writes land in the host's
  directory), its /etc/ssh, /root, /tmp and hostname, starts sshd and reaps orphans.

``Lab.add_bridge(subnet)`` adds a second network (a "public side", e.g. 10.88.1.0/24 with the
controller on .1); ``add_host(public_bridge=..., public_ip=...)`` gives a host a second NIC
``eth1`` on it (veth ``<prefix>p<n>``), owning ``public_ip`` -- an address of that subnet, or
any other (a moto public IP, 54.214.x.y): the host holds it as a /32 and the controller gets a
/32 route to it through that bridge, removed with the host. A bastion is such a host.
``Lab.cut_off()`` (a context manager) stops the controller from opening connections into the
main bridge (iptables OUTPUT, NEW only: replies to the hosts' own connections, e.g. their load
on the target, still flow), and removes exactly its rule on exit: the hosts are then
reachable only through a host on another bridge.

Everything created is named from a per-process prefix ``sw<pid><letter>``
(interface names stay <= 15 chars) and removed by exactly those names. Bridges and routes live
in the current (lab) namespace, which ``run_in_lab.py`` deletes with everything in it.

The ``unshare`` processes get PDEATHSIG=SIGKILL (``setpriv``), forked from
one long-lived thread (proc._Spawner), so a test process that dies hard takes its hosts
with it; netns names/dirs are also registered for ``run_in_lab.py``.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import os
import sys
import tempfile
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from . import rootfs
from .boot import start_init, write_host_files
from .firewall import restore as restore_firewall
from .host import READY_TIMEOUT, SYSTEM_PATH, Host
from .proc import LabError, _cmdline, _ip_batch, _run, _safe_rmtree, python_paths

DEFAULT_SUBNET = "10.77.1.0/24"
DEAD_MODES = ("silent", "refuse", "blackhole")

_lab_letters = iter("abcdefghijklmnopqrstuvwxyz")
_lab_letters_lock = threading.Lock()


@dataclass(frozen=True)
class Bridge:
    """A second network of the lab: ``name`` in the current namespace holds ``ip``, the first
    address of ``subnet`` (the controller's address on that side)."""

    name: str
    subnet: ipaddress.IPv4Network
    ip: str


def _make_bridge(name: str, mac: str, address: str) -> None:
    # A fixed MAC: else the bridge takes its lowest port's MAC, which changes when a host is
    # added or removed, and the other hosts' ARP entry for the bridge IP (the target) goes
    # stale: their load stalls for ~30 s after any other host comes or goes.
    _ip_batch([f"link add {name} type bridge", f"link set {name} address {mac}",
               f"addr add {address} dev {name}", f"link set {name} up"])
    try:
        Path(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6").write_text("1")
    except OSError:
        pass


def _b36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


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
        self.bridges: dict[str, Bridge] = {}
        self._counter = 0
        self._bridge_counter = 0
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
        self._carried = rootfs.carried_mounts(
            [*self._keep_paths, Path(__file__).resolve().parents[2]])
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
            _make_bridge(self.bridge, "02:77:00:00:00:01",
                         f"{self.bridge_ip}/{self.subnet.prefixlen}")
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

    # -- more networks -----------------------------------------------------

    def add_bridge(self, subnet: str) -> Bridge:
        """A second bridge holding the first address of `subnet` (see the module's doc)."""
        net = ipaddress.ip_network(subnet)
        if net.version != 4 or net.overlaps(self.subnet) or any(
                net.overlaps(b.subnet) for b in self.bridges.values()):
            raise LabError(f"{subnet}: not an IPv4 subnet apart from the lab's networks")
        with self._lock:
            if self._closed:
                raise LabError("lab is closed")
            index = self._bridge_counter
            self._bridge_counter += 1
            name = f"{self.prefix}b{_b36(index)}"
            bridge = Bridge(name, net, str(next(net.hosts())))
            self.bridges[name] = bridge
        try:
            _make_bridge(name, f"02:77:00:00:01:{index % 256:02x}",
                         f"{bridge.ip}/{net.prefixlen}")
        except BaseException:
            self.remove_bridge(bridge)
            raise
        return bridge

    def remove_bridge(self, bridge: Bridge) -> None:
        """Remove the bridge's hosts, then the bridge itself (by its name). Idempotent."""
        for host in [h for h in list(self.hosts.values()) if h.public_bridge == bridge.name]:
            host.remove()
        _run(["ip", "link", "del", bridge.name], check=False)
        with self._lock:
            self.bridges.pop(bridge.name, None)

    @contextlib.contextmanager
    def cut_off(self) -> Iterator[None]:
        """While inside: this namespace cannot open connections into the main bridge (REJECT:
        they fail at once, "connection refused"); what the hosts open to it still works."""
        rule = ["OUTPUT", "-o", self.bridge, "-m", "conntrack", "--ctstate", "NEW",
                "-m", "comment", "--comment", f"{self.prefix} cut off", "-j", "REJECT"]
        _run(["iptables", "-w", "10", "-I", *rule])
        try:
            yield
        finally:
            _run(["iptables", "-w", "10", "-D", *rule])

    # -- hosts --------------------------------------------------------------

    def free_ip(self, start: int = 100) -> str:
        """First address of the subnet at offset >= ``start`` without a host."""
        with self._lock:
            for offset in range(start, self.subnet.num_addresses - 1):
                ip = str(self.subnet.network_address + offset)
                if ip != self.bridge_ip and ip not in self.hosts:
                    return ip
        raise LabError("no free address left in the lab subnet")

    def add_host(self, ip: str | None = None, authorized_key: str = "",
                 name: str | None = None, *, dead: bool | str = False,
                 wait: bool = True, timeout: float = READY_TIMEOUT,
                 private_dirs: Iterable[str] = (), env: dict[str, str] | None = None,
                 sshd_delay: float = 0.0, power_broken: bool = False,
                 own_root: bool = True, user: str = "root", sudo: bool = True,
                 hide: Iterable[str] = (), bare: bool = False,
                 firewall: str | None = None, public_bridge: Bridge | None = None,
                 public_ip: str | None = None,
                 sshd_options: dict[str, str] | None = None) -> Host:
        """Create a host answering SSH at ``ip`` for ``authorized_key``.

        ``dead``: False (normal), True/"silent" (TCP accepted, never a
        banner), "refuse" (nothing listens: connection refused), "blackhole"
        (the host drops every outgoing packet: connects time out).
        ``private_dirs``: absolute paths (existing directories, not under /root or /tmp)
        over which the host gets an empty directory of its own (``Host.private[path]``).
        ``env``: its SSH sessions' environment (``PATH`` replaces the lab's).
        ``sshd_delay``: sshd starts that many seconds after the host (refused until then).
        ``sshd_options``: sshd_config keywords over the lab's (``{"MaxStartups": "3:100:3"}``).
        ``power_broken``: nothing can schedule a power-off there (power.py).
        ``bare``: a machine without swarm's or the lab's Python: its sessions get only the
        system PATH, and the lab's venv (and its base Python, unless that is the system's)
        are hidden (whiteouts in its own root); only the system's Python is left to find.
        ``own_root``: the host's root is an overlay of this machine's, its writes its own
        (rootfs.py); False only to prove that the machine-snapshot test catches a leak.
        ``user``: the login user the key is for (``ubuntu``, ``ec2-user``), made in the host's
        layer with passwordless ``sudo`` (or none); root then refuses the key, as on EC2.
        ``hide``: machine paths the host does not have (e.g. its Python).
        ``firewall``: an iptables table loaded in its namespace before it boots (firewall.py).
        ``public_bridge`` / ``public_ip``: a second NIC on that bridge (``add_bridge``) owning
        ``public_ip`` (default: a free address of the bridge's subnet), sshd listening there too.
        """
        if dead is True:
            dead = "silent"
        if dead and dead not in DEAD_MODES:
            raise LabError(f"dead must be one of {DEAD_MODES}, not {dead!r}")
        hidden = tuple(hide) + (tuple(str(p) for p in self._bare_hidden()) if bare else ())
        if not own_root and (user != "root" or hidden):
            raise LabError("a login user or hidden paths need the host's own root")
        if not rootfs.USER_NAME.match(user):
            raise LabError(f"user {user!r}: not a user name")
        rootfs.check_hidden(list(hidden))
        with self._lock:
            if self._closed:
                raise LabError("lab is closed")
            public_ip = self._public_address(public_bridge, public_ip)
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
            private = {}
            for target in private_dirs:
                if not os.path.isabs(target) or not os.path.isdir(target) or \
                        target.split("/")[1] in ("root", "tmp", "proc", "sys", "dev"):
                    raise LabError(f"private dir {target!r}: not an existing machine directory")
                private[target] = hdir / "private" / target.strip("/").replace("/", "-")
            # reserve the address while we build
            host = Host(name=host_name, ip=ip, netns=netns, veth=veth, dir=hdir,
                        home=hdir / "root", tmp=hdir / "tmp", etc_ssh=hdir / "etc-ssh",
                        log_path=hdir / "sshd.log", host_key_pub="",
                        dead=dead or None, lab=self, private=private, env=dict(env or {}),
                        sshd_delay=sshd_delay, sshd_options=dict(sshd_options or {}),
                        power_broken=power_broken,
                        own_root=own_root, user=user, sudo=sudo, hidden=hidden, bare=bare,
                        firewalled=firewall is not None)
            if public_bridge is not None:
                host.public_ip, host.public_bridge = public_ip, public_bridge.name
                host.public_veth = f"{self.prefix}p{n}"
            self.hosts[ip] = host
        try:
            self._build(host, authorized_key, firewall)
            if wait:
                host.wait_ready(timeout)
        except BaseException:
            try:
                host.remove()
            except Exception:  # noqa: BLE001 - keep the original error
                pass
            raise
        return host

    def _public_address(self, bridge: Bridge | None, ip: str | None) -> str | None:
        """The address a host's second NIC owns, checked; the caller holds the lock."""
        if bridge is None:
            if ip is not None:
                raise LabError("public_ip needs a public_bridge")
            return None
        if self.bridges.get(bridge.name) != bridge:
            raise LabError(f"bridge {bridge.name} is not this lab's")
        taken = {h.public_ip for h in self.hosts.values()} | {bridge.ip}
        if ip is None:
            ip = next((str(a) for a in bridge.subnet.hosts() if str(a) not in taken), None)
            if ip is None:
                raise LabError(f"no free address left in {bridge.subnet}")
        addr = ipaddress.ip_address(ip)
        if ip in taken or addr in self.subnet or addr in (
                bridge.subnet.network_address, bridge.subnet.broadcast_address):
            raise LabError(f"{ip} is not a free public address for {bridge.name}")
        return ip

    def _build(self, host: Host, authorized_key: str, firewall: str | None = None) -> None:
        public = None
        if host.public_ip is not None:
            public = self.bridges[host.public_bridge]
        init = write_host_files(host, authorized_key, public=public,
                                session_path=SYSTEM_PATH if host.bare else self.session_path,
                                prefixlen=self.subnet.prefixlen,
                                keep_paths=[] if host.bare else self._keep_paths,
                                carried=self._carried)

        self._register_netns(host.netns)
        _ip_batch([f"netns add {host.netns}",
                   f"link add {host.veth} type veth peer name eth0 netns {host.netns}",
                   f"link set {host.veth} master {self.bridge} up"])
        try:
            Path(f"/proc/sys/net/ipv6/conf/{host.veth}/disable_ipv6").write_text("1")
        except OSError:
            pass
        if host.public_ip is not None:
            bridge = self.bridges[host.public_bridge]
            lines = [f"link add {host.public_veth} type veth peer name eth1 netns {host.netns}",
                     f"link set {host.public_veth} master {bridge.name} up"]
            if ipaddress.ip_address(host.public_ip) not in bridge.subnet:
                lines.append(f"route replace {host.public_ip}/32 dev {bridge.name} "
                             f"src {bridge.ip}")
            _ip_batch(lines)
        if firewall is not None:
            restore_firewall(host.netns, firewall)

        start_init(host, init)

    def _bare_hidden(self) -> list[Path]:
        """What a bare host must not see: the venv, and the Python it was made from, unless
        that is the system's own (/usr: the bare host's Python then). Paths under /root and
        /tmp are the host's own already."""
        system = {Path("/"), Path("/usr"), Path("/usr/local")}
        base = Path(sys.base_prefix).resolve()
        hidden = [self.venv.resolve()] + ([base] if base not in system else [])
        return [p for p in hidden if p.is_dir() and p.parts[1:2] not in (("root",), ("tmp",))]

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
        for bridge in list(self.bridges.values()):
            self.remove_bridge(bridge)
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
        routes = [r for r in _run(["ip", "-o", "route", "show"], check=False).stdout.splitlines()
                  if f"dev {self.prefix}" in r]
        return {"netns": netns, "links": links, "routes": routes, "processes": procs,
                "dirs": [str(self.base_dir)] if self.base_dir.exists() else []}

