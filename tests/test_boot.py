"""Boot as it really is: the real bootstrap/bootstrap.sh, run by `swarm up` over real SSH, on
an emulated host that looks like a fresh Ubuntu instance still booting: cloud-init running,
another process (unattended-upgrades) holding apt's locks, no Python >= 3.11 until apt
installs it.

The host has its own /var/lib/dpkg, /var/lib/apt/lists, /var/cache/apt and
/etc/security/limits.d (empty per-host directories bound over the machine's, so this
machine's apt state and locks are never touched) and its own /usr/local/sbin, first on its
PATH, holding stubs: `apt-get` (records its calls, installs nothing), `cloud-init`, and
python3.x shims that answer only once the stub apt-get has "installed" Python. pip is real:
it installs `locust` from a wheelhouse on the host (the lab has no route to PyPI), a wheel
that leads to this machine's Locust.
"""
from __future__ import annotations

import re

import base64
import hashlib
import importlib.metadata
import site
import sys
import zipfile
from pathlib import Path

from tests.emulation.host import SYSTEM_PATH, Host
from tests.helpers import swarm
from tests.reliability import poll

SBIN = "/usr/local/sbin"
PRIVATE = [SBIN, "/var/lib/dpkg", "/var/lib/apt/lists", "/var/cache/apt"]
if Path("/etc/security/limits.d").is_dir():
    PRIVATE.append("/etc/security/limits.d")   # bootstrap as root writes 90-swarm.conf there
LOCKS = ["/var/lib/dpkg/lock-frontend", "/var/lib/dpkg/lock", "/var/lib/apt/lists/lock",
         "/var/cache/apt/archives/lock"]
VERSION = importlib.metadata.version("locust")
CALLS = "/var/lib/dpkg/stub-apt-calls"

APT_GET = f"""#!/bin/sh
# stub apt-get: records the call, installs nothing
echo "$*" >>{CALLS}
case " $* " in
*" update "*)
    if [ -f /var/lib/apt/lists/fail-next-update ]; then
        rm -f /var/lib/apt/lists/fail-next-update
        echo "E: Failed to fetch http://archive.ubuntu.com/ubuntu/dists/noble/InRelease  503"
        exit 100
    fi ;;
*" install "*) touch /var/lib/dpkg/stub-python-installed ;;
esac
exit 0
"""
PYTHON_SHIM = """#!/bin/sh
# no usable Python until the stub apt-get has "installed" it
[ -f /var/lib/dpkg/stub-python-installed ] || {{ echo "{name}: not found" >&2; exit 127; }}
exec {real} "$@"
"""
CLOUD_INIT = f"""#!/bin/sh
# stub cloud-init: "running" until a `status --wait` has waited 2 s
done={SBIN}/cloud-init.done
[ "$1" = status ] || exit 1
if [ "$2" = --wait ] && [ ! -f "$done" ]; then sleep 2; touch "$done"; fi
if [ -f "$done" ]; then echo "status: done"; else echo "status: running"; fi
"""
# Holds apt's locks as apt does (fcntl, not flock) for argv[1] seconds; its name is what the
# kernel reports as the holder's comm.
HOLDER = f"""#!{sys.executable}
import fcntl, os, sys, time
fds = []
for path in {LOCKS!r}:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o640)
    fcntl.lockf(fd, fcntl.LOCK_EX)
    fds.append(fd)
with open("{SBIN}/holder.locked", "w") as f:
    f.write(str(os.getpid()))
time.sleep(float(sys.argv[1]))
for fd in fds:
    os.close(fd)
open("{SBIN}/holder.released", "w").close()
"""


def _executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


def _locust_wheel(wheelhouse: Path) -> None:
    """locust-VERSION-py3-none-any.whl: the `locust` distribution and console script, whose
    code is this machine's Locust (a .pth to its site-packages)."""
    wheelhouse.mkdir(parents=True, exist_ok=True)
    di = f"locust-{VERSION}.dist-info"
    files = {
        "swarm_lab_locust.pth": "".join(p + "\n" for p in site.getsitepackages()),
        f"{di}/METADATA": f"Metadata-Version: 2.1\nName: locust\nVersion: {VERSION}\n",
        f"{di}/WHEEL": "Wheel-Version: 1.0\nGenerator: swarm-tests\nRoot-Is-Purelib: true\n"
                       "Tag: py3-none-any\n",
        f"{di}/entry_points.txt": "[console_scripts]\nlocust = locust.main:main\n",
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{name},sha256={digest.decode()},{len(text.encode())}")
    record.append(f"{di}/RECORD,,")
    files[f"{di}/RECORD"] = "\n".join(record) + "\n"
    with zipfile.ZipFile(wheelhouse / f"locust-{VERSION}-py3-none-any.whl", "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)


def on_host(host: Host, path: str) -> Path:
    """Where the host's own copy of `path` (under one of its private dirs) is on this machine."""
    for inside, mine in host.private.items():
        if path.startswith(inside + "/"):
            return mine / Path(path).relative_to(inside)
    raise AssertionError(f"{path} is not in a private dir of {host.name}")


def fresh_ubuntu(emulated_hosts, env: dict[str, str] | None = None):
    """One host as a fresh instance: stubs in its own /usr/local/sbin, its own apt state, no
    Locust and no Python >= 3.11 on its PATH (not the lab's venv either)."""
    hs = emulated_hosts(1, private_dirs=PRIVATE,
                        env={"PATH": SYSTEM_PATH, **(env or {})})
    host: Host = hs.hosts[0]
    sbin = host.private[SBIN]
    _executable(sbin / "apt-get", APT_GET)
    for name in ("python3.13", "python3.12", "python3.11", "python3"):
        real = sys.executable if name in ("python3.11", "python3") else "/nonexistent"
        _executable(sbin / name, PYTHON_SHIM.format(name=name, real=real))
    _executable(sbin / "cloud-init", CLOUD_INIT)
    _executable(sbin / "unattended-upgrade", HOLDER)
    for lock in LOCKS:
        path = on_host(host, lock)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o640)
    _locust_wheel(host.home / "wheels")
    (host.home / ".config" / "pip").mkdir(parents=True)
    (host.home / ".config" / "pip" / "pip.conf").write_text(
        "[global]\nno-index = true\nfind-links = /root/wheels\n")
    return hs


def hold_locks(host: Host, seconds: float) -> None:
    """unattended-upgrade takes apt's locks on the host, for `seconds`."""
    host.exec(f"setsid {SBIN}/unattended-upgrade {seconds} </dev/null >/dev/null 2>&1 &",
              check=True)
    poll(lambda: (host.private[SBIN] / "holder.locked").exists(), timeout=20,
         what="the apt locks to be taken")


def holder_pid(host: Host) -> int:
    """The lock holder's pid as the host sees it (its own PID namespace)."""
    return int((host.private[SBIN] / "holder.locked").read_text())


def outcomes(table: str) -> str:
    """The text of a rendered results table's last column, its wrapped lines joined."""
    cells = [line.split("│")[-2].strip() for line in table.splitlines() if line.count("│") >= 2]
    return " ".join(cells)


def hosts_toml(workdir: Path, host: Host, key: Path) -> None:
    (workdir / "swarm.toml").write_text(
        f'[stack]\nname = "boot"\nprovider = "hosts"\n'
        f'[hosts]\nmaster = "root@{host.ip}"\nworkers = []\nssh_key = "{key}"\n'
        f'[locust]\nprocesses = 1\n')


def apt_calls(host: Host) -> list[str]:
    path = on_host(host, CALLS)
    return path.read_text().splitlines() if path.exists() else []


def test_bootstrap_waits_for_cloud_init_and_the_apt_locks_then_installs(
        workdir, cli_env, emulated_hosts):
    """cloud-init still running, unattended-upgrades holding apt's locks for a few seconds,
    a mirror failing once: bootstrap waits for each and says so in its log, then installs
    Python through apt (after the locks are free), makes the venv, pip installs Locust, and
    `swarm up master` exits 0."""
    hs = fresh_ubuntu(emulated_hosts)
    host = hs.hosts[0]
    hosts_toml(workdir, host, hs.key_path)
    (host.private["/var/lib/apt/lists"] / "fail-next-update").touch()
    hold_locks(host, 5)
    res = swarm("up", "master", cwd=workdir, env=cli_env, timeout=300)
    log = (host.home / "swarm" / "bootstrap.log").read_text()
    assert res.code == 0, (res.err, log)
    assert "waiting for cloud-init to finish (status: running)" in log, log
    assert "cloud-init finished after" in log, log
    assert f"waiting for apt lock {LOCKS[0]} (held by pid " in log, log
    assert "(unattended-upgr))" in log, log
    assert "apt locks free after" in log, log
    assert "apt-get update failed; retrying in 5s" in log, log
    calls = apt_calls(host)
    assert [c.split()[-1] for c in calls if "update" in c] == ["update", "update"], calls
    assert any(c.endswith("install python3 python3-venv") for c in calls), calls
    assert (host.private[SBIN] / "holder.released").exists()
    # Everything apt did came after the holder let go: the order in the log says so.
    assert log.index("apt locks free after") < log.index("apt-get update (attempt 1 of 4)")
    assert log.index("cloud-init finished") < log.index("waiting for apt lock")
    assert f"installed locust {VERSION} at /root/swarm/venv/bin/locust" in log, log
    assert "bootstrap done" in log, log
    assert swarm("down", cwd=workdir, env=cli_env, timeout=120).code == 0


def test_bootstrap_gives_up_on_an_apt_lock_held_too_long(workdir, cli_env, emulated_hosts):
    """The locks stay held past the bound (SWARM_APT_LOCK_TIMEOUT, shortened for the test):
    bootstrap fails with one line naming the lock and its holder; apt-get never ran."""
    bound = 3
    hs = fresh_ubuntu(emulated_hosts, env={"SWARM_APT_LOCK_TIMEOUT": str(bound)})
    host = hs.hosts[0]
    hosts_toml(workdir, host, hs.key_path)
    hold_locks(host, 120)                 # gone with the host at the end of the test
    res = swarm("up", "master", cwd=workdir, env=cli_env, timeout=300)
    assert res.code == 1, (res.out, res.err)
    log = (host.home / "swarm" / "bootstrap.log").read_text().splitlines()
    # the seconds it waited: the bound, or a little more on a busy machine (the script polls)
    waited = re.search(r"still held by .* after (\d+)s \(", log[-1])
    assert waited and bound <= int(waited[1]) <= bound + 10, log
    reason = (f"apt lock {LOCKS[0]} still held by pid {holder_pid(host)} (unattended-upgr) "
              f"after {waited[1]}s (another apt or dpkg, e.g. unattended-upgrades): let it "
              "finish, then run `swarm up` again")
    assert log[-1].endswith(f"[bootstrap] bootstrap FAILED: {reason}"), log
    assert f"failed: bootstrap failed (exit 1): {reason}; last lines" in outcomes(res.out), res.out
    assert res.err_lines[-1].startswith("error: bootstrap failed on 1 of 1 node(s)"), res.err
    assert apt_calls(host) == []
    assert swarm("down", cwd=workdir, env=cli_env, timeout=120).code == 0
