"""The controller's link into the lab: the bridge's own egress. What the controller (this
namespace: swarm, the bench, nginx) sends to the hosts leaves through the bridge device, so its
tx counter is the controller's uplink; host-to-host traffic is switched port to port and never
passes the bridge device's egress (uplink.check_claim measures both)."""
from __future__ import annotations

import subprocess
from pathlib import Path

# 20 Mbit/s: a laptop's or CI runner's upstream. tbf (netem is not in these kernels' namespaces):
# a 4 KB burst, and at most 400 ms queued (1 MB) before tbf drops, as a real uplink's buffer.
TBF = ("tbf", "rate", "20mbit", "burst", "32kbit", "latency", "400ms")


def link_tx(dev: str) -> int:
    """Bytes transmitted by `dev` so far (all protocols)."""
    try:
        return int(Path(f"/sys/class/net/{dev}/statistics/tx_bytes").read_text())
    except (OSError, ValueError):
        return 0


def shape(dev: str) -> None:
    subprocess.run(["tc", "qdisc", "add", "dev", dev, "root", *TBF], check=True,
                   capture_output=True, timeout=10)


def unshape(dev: str) -> None:
    """Remove the root qdisc `shape` added (the device's default qdisc comes back)."""
    subprocess.run(["tc", "qdisc", "del", "dev", dev, "root"], check=False,
                   capture_output=True, timeout=10)


def qdisc_sent(dev: str) -> str:
    """tc's own view of the root qdisc ("Sent X bytes Y pkt ..."), for the record."""
    out = subprocess.run(["tc", "-s", "qdisc", "show", "dev", dev], capture_output=True,
                         text=True, timeout=10).stdout
    return " ".join(out.split())
