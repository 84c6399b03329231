"""Session Manager in the lab: stand-ins for the AWS CLI and its plugin, for connect = "ssm".

The real `aws ssm start-session` needs AWS (an SSM endpoint, the agent's WebSocket channel):
it cannot run offline. ``install(bin_dir, emulator)`` writes into ``bin_dir`` (put it first on
the CLI subprocess's PATH):

* ``aws``: checks that its argv is exactly the documented ProxyCommand line (``ssm
  start-session --target <instance id> --document-name AWS-StartSSHSession --parameters
  portNumber=22 --region <region>``, then ``--profile P`` if one is expected), that the
  Session Manager plugin is on PATH (the real CLI refuses without it, with its own words),
  and that the target is a managed node (an instance of the emulator with a live host; else
  AWS's TargetNotConnected). Then it does what the SSM agent does inside the instance:
  connects to the node's sshd from *within* the host's network namespace (``nsenter
  --net``), over its loopback path, and relays stdin/stdout to it. The security group's
  iptables table accepts loopback, so this works with no port-22 rule while a connection
  from the controller is dropped. Every argv it was called with is appended to
  ``calls.jsonl`` in ``bin_dir``.
* ``session-manager-plugin``: present, does nothing (the CLI stand-in checks it is there).

The managed nodes (instance id -> netns and address) are in ``managed.json``, rewritten by the
emulator after every launch and termination (``EmulatedEC2.managed_nodes_file``), as the
agent registers an instance with SSM when it boots.

The emulated sshd listens on the host's own address only (boot.py), so the relay connects to
that address from inside the host: the same loopback path the agent's ``localhost:22`` takes.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

PLUGIN_MISSING = ("SessionManagerPlugin is not found. Please refer to SessionManager "
                  "Documentation here: http://docs.aws.amazon.com/console/systems-manager/"
                  "session-manager-plugin-not-found")

# Runs inside the host's network namespace: stdin/stdout <-> ip:port, until either side ends.
RELAY = r"""
import os, select, socket, sys
try:
    sock = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
except OSError as e:
    sys.stderr.write("Connection to destination port failed, check SSM Agent logs. (%s)\n" % e)
    sys.exit(1)
sock.settimeout(None)
fds, out = [0, sock.fileno()], 1
while fds:
    for fd in select.select(fds, [], [])[0]:
        try:
            data = os.read(fd, 65536)
        except OSError:
            sys.exit(0)
        if fd == 0:
            if data:
                sock.sendall(data)
            else:
                sock.shutdown(socket.SHUT_WR); fds.remove(0)
        elif data:
            os.write(out, data)
        else:
            sys.exit(0)
"""

AWS = r'''#!{python}
import json, os, shutil, sys
here = os.path.dirname(os.path.abspath(__file__))
argv = sys.argv[1:]
with open(os.path.join(here, "calls.jsonl"), "a") as log:
    log.write(json.dumps(argv) + "\n")
want = {want!r}
shape = [w if w != "TARGET" else (argv[3] if len(argv) > 3 else "?") for w in want]
if argv != shape:
    sys.stderr.write("aws stand-in: not the documented start-session line: %r\n" % (argv,))
    sys.exit(252)
if shutil.which("session-manager-plugin") is None:
    sys.stderr.write({plugin_missing!r} + "\n")
    sys.exit(255)
target = argv[3]
with open(os.path.join(here, "managed.json")) as f:
    managed = json.load(f)
if target not in managed:
    sys.stderr.write("An error occurred (TargetNotConnected) when calling the StartSession "
                     "operation: %s is not connected.\n" % target)
    sys.exit(254)
netns, ip = managed[target]
port = argv[7].split("=", 1)[1]
os.execvp("nsenter", ["nsenter", "--net=/run/netns/" + netns, "--",
                      sys.executable, "-c", {relay!r}, ip, port])
'''


def documented_line(region: str, profile: str | None = None) -> list[str]:
    """The argv of `aws` AWS documents for SSH over Session Manager, for one node (TARGET:
    its instance id)."""
    line = ["ssm", "start-session", "--target", "TARGET", "--document-name",
            "AWS-StartSSHSession", "--parameters", "portNumber=22", "--region", region]
    return line + (["--profile", profile] if profile else [])


def install(bin_dir: Path, emulator: Any, *, region: str = "us-east-1",
            profile: str | None = None, plugin: bool = True, cli: bool = True) -> Path:
    """The stand-ins in `bin_dir` (`plugin`/`cli` False: leave that one out), the emulator
    keeping `managed.json` there -> bin_dir."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    if cli:
        aws = bin_dir / "aws"
        aws.write_text(AWS.format(python=sys.executable, want=documented_line(region, profile),
                                  plugin_missing=PLUGIN_MISSING, relay=RELAY))
        aws.chmod(0o755)
    if plugin:
        stub = bin_dir / "session-manager-plugin"
        stub.write_text("#!/bin/sh\necho 'The Session Manager plugin was installed "
                        "successfully. Use the AWS CLI to start a session.'\n")
        stub.chmod(0o755)
    emulator.managed_nodes_file = bin_dir / "managed.json"
    emulator.write_managed_nodes()
    return bin_dir


def calls(bin_dir: Path) -> list[list[str]]:
    path = bin_dir / "calls.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def path_with(bin_dir: Path) -> str:
    """PATH with the stand-ins first and no other `aws` or plugin: the system's dirs only,
    minus any that hold a real one."""
    keep = [d for d in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep)
            if d and not any((Path(d) / t).exists() for t in ("aws", "session-manager-plugin"))]
    return os.pathsep.join([str(bin_dir), *keep])
