"""A root of its own for each emulated host (``Lab.add_host(own_root=True)``, the default).

The host's init (boot.py) mounts an overlay whose lower layer is this machine's root filesystem
and whose upper layer is the host's own directory (``Host.layer``), mounts into it what the root
filesystem does not hold (/dev, /proc, /sys, the host's own /run, /etc/ssh, /root and /tmp, and
any other mount the lab's Python, venv or checkout live on: ``carried_mounts``), and pivots into
it before sshd starts. Whatever the host writes -- bootstrap as root, apt, pip, limits files,
users -- lands in its layer and is deleted with its directory; this machine's files are never
written. ``Host.exec`` (nsenter --mount) enters the same root: pivot_root made it the root of
the host's mount namespace.

Before the host starts, the lab writes into the layer what an EC2 image and cloud-init would
have made: /etc/hostname and /etc/hosts (the name resolves, as in a VPC: sudo looks it up), the
power stubs in /usr/sbin (power.py), a login user (``user``: its passwd/group/shadow lines, its
home with the authorized key, and with ``sudo`` cloud-init's sudoers.d entry), and whiteouts for
paths the host must not have (``hide``). Files written into an upper layer before it is mounted
are simply part of it; nothing is written there while it is mounted.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import time
from pathlib import Path

from .proc import LabError

USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
# Mounted by the init itself (or per host): never carried from the machine.
OWN_MOUNTS = ("/proc", "/sys", "/dev", "/run", "/root", "/tmp", "/etc/ssh")
# What cloud-init writes for the default user on Ubuntu and Amazon Linux.
SUDOERS = "# Created by cloud-init (emulated host)\n\n# User rules for {user}\n" \
          "{user} ALL=(ALL) NOPASSWD:ALL\n"
SUDOERS_FILE = "etc/sudoers.d/90-cloud-init-users"
# EC2 images refuse root logins with the instance key this way (cloud-init's disable_root;
# it sleeps 10 s, not 1: no test waits for that).
ROOT_REFUSAL = ('no-port-forwarding,no-agent-forwarding,no-X11-forwarding,command="echo '
                "'Please login as the user \\\"{user}\\\" rather than the user \\\"root\\\".';"
                'echo;sleep 1;exit 142" ')


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def _mount_points() -> list[str]:
    with open("/proc/self/mountinfo") as fh:
        return [line.split()[4] for line in fh]


def carried_mounts(paths: list[Path]) -> list[str]:
    """The mount points (other than /) that ``paths`` live on, which an overlay of / alone would
    show empty: each is bound into every host's root, so the lab's Python works there."""
    points = sorted(set(_mount_points()), key=len, reverse=True)
    carried = set()
    for path in paths:
        p = os.path.realpath(path)
        mount = next((m for m in points if _under(p, m)), "/")
        if mount != "/" and not any(_under(mount, own) for own in OWN_MOUNTS):
            carried.add(mount)
    return sorted(carried)


def check_hidden(paths: list[str]) -> None:
    for path in paths:
        if not os.path.isabs(path) or any(_under(path, own) for own in OWN_MOUNTS) \
                or path.rstrip("/") in ("", "/etc", "/usr"):
            raise LabError(f"hide {path!r}: not a path of the host's own layer")


def _mkdirs(layer: Path, rel: str, mode: int = 0o755) -> Path:
    """``layer/rel`` and its parents, with the machine's mode and owner where it has them (an
    upper dir's attributes are what the host sees)."""
    d = layer
    for part in Path(rel).parts:
        d = d / part
        if not d.exists():
            d.mkdir()
            try:
                st = os.stat(Path("/") / d.relative_to(layer))
                os.chmod(d, stat.S_IMODE(st.st_mode))
                os.chown(d, st.st_uid, st.st_gid)
            except FileNotFoundError:
                os.chmod(d, mode)
    return d


def _write(layer: Path, rel: str, text: str, mode: int = 0o644, owner: tuple[int, int] = (0, 0)):
    path = _mkdirs(layer, str(Path(rel).parent)) / Path(rel).name
    path.write_text(text)
    os.chmod(path, mode)
    os.chown(path, *owner)


def _machine(path: str) -> str:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return ""
    return text if not text or text.endswith("\n") else text + "\n"


def prepare(layer: Path, *, name: str, ip: str) -> None:
    """The layer's files every host gets: its hostname, resolvable."""
    _write(layer, "etc/hostname", f"{name}\n")
    _write(layer, "etc/hosts", _machine("/etc/hosts") + f"{ip}\t{name}\n")


def _free_id() -> int:
    """A uid (= gid) >= 1000 this machine does not use: a host user's files, seen from here, are
    nobody's."""
    used = set()
    for path in ("/etc/passwd", "/etc/group"):
        for line in _machine(path).splitlines():
            fields = line.split(":")
            if len(fields) > 2 and fields[2].isdigit():
                used.add(int(fields[2]))
    return next(i for i in range(1000, 60000) if i not in used)


def add_user(layer: Path, user: str, *, sudo: bool, authorized_key: str) -> Path:
    """The host's login user, as EC2's cloud-init makes it; returns its home (controller
    side). The shadow entry is ``*`` (no password, not locked: sshd without PAM refuses a
    locked account)."""
    uid = _free_id()
    shadow_gid = next((int(f[2]) for f in (line.split(":")
                       for line in _machine("/etc/group").splitlines())
                       if f[0] == "shadow" and len(f) > 2), 0)
    days = int(time.time() // 86400)
    _write(layer, "etc/passwd",
           _machine("/etc/passwd") + f"{user}:x:{uid}:{uid}::/home/{user}:/bin/bash\n")
    _write(layer, "etc/group", _machine("/etc/group") + f"{user}:x:{uid}:\n")
    _write(layer, "etc/shadow", _machine("/etc/shadow") + f"{user}:*:{days}:0:99999:7:::\n",
           mode=0o640, owner=(0, shadow_gid))
    if sudo:
        _write(layer, SUDOERS_FILE, SUDOERS.format(user=user), mode=0o440)
    home = _mkdirs(layer, f"home/{user}")
    ssh = home / ".ssh"
    ssh.mkdir(mode=0o700)
    key = ssh / "authorized_keys"
    key.write_text(authorized_key.strip() + "\n" if authorized_key.strip() else "")
    for path, mode in ((home, 0o750), (ssh, 0o700), (key, 0o600)):
        os.chown(path, uid, uid)
        os.chmod(path, mode)
    return home


def hide(layer: Path, paths: list[str]) -> None:
    """Whiteouts (a 0/0 character device, as overlayfs writes them): the host has no such
    path, whatever the machine has."""
    for path in paths:
        rel = path.strip("/")
        parent = _mkdirs(layer, str(Path(rel).parent))
        target = parent / Path(rel).name
        if target.exists() or target.is_symlink():
            shutil.rmtree(target) if target.is_dir() and not target.is_symlink() \
                else target.unlink()
        os.mknod(target, stat.S_IFCHR | 0o600, os.makedev(0, 0))


def enter_lines(layer: Path, work: Path, merged: Path, carried: list[str]) -> list[str]:
    """The init's first mounts: the overlay, then what / alone does not hold."""
    q = shlex.quote
    m = str(merged)
    lines = [f"mount -t overlay overlay -o lowerdir=/,upperdir={q(str(layer))},"
             f"workdir={q(str(work))} {q(m)}"]
    lines += [f"mount --rbind {q(p)} {q(m + p)}" for p in ("/dev", "/proc", "/sys", *carried)]
    return lines


def pivot_lines(merged: Path) -> list[str]:
    """Enter the merged root for good (one command a line: `set -e` stops at a failed one,
    where an `a && b` list would carry on on the machine's root)."""
    return [f"cd {shlex.quote(str(merged))}", "pivot_root . .", "umount -l .", "cd /",
            "grep -q ' / / [^ ]* [^-]*- overlay ' /proc/self/mountinfo"]
