"""Which Service Quotas quota an EC2 limit error is about, and where to raise it.

EC2 counts running instances in vCPUs per instance bucket ("On-Demand Instance quotas" and
"Spot Instance quotas", EC2 User Guide): one quota for the standard families (A, C, D, H, I,
M, R, T, Z), one each for the others. AWS's error names the limit but not the quota; the
launch knows the instance type, so the next step can name the quota and its page.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Error codes of a limit of the account, not of a mistake or of capacity.
QUOTA_CODES = frozenset(
    {"VcpuLimitExceeded", "InstanceLimitExceeded", "MaxSpotInstanceCountExceeded"}
)
SPOT_QUOTA_CODES = frozenset({"MaxSpotInstanceCountExceeded"})
STANDARD_LETTERS = frozenset({"a", "c", "d", "h", "i", "m", "r", "t", "z", "im", "is"})
_STANDARD = "Standard (A, C, D, H, I, M, R, T, Z)"
# bucket -> quota code (on-demand, spot); the letters of a family that are not standard name
# their own bucket (hpc, dl, inf, trn are not H, D or I)
_CODES = {
    _STANDARD: ("L-1216C47A", "L-34B43A08"),
    "G and VT": ("L-DB2E81BA", "L-3819A6DF"),
}
_BUCKETS = {
    "g": "G and VT",
    "gr": "G and VT",
    "vt": "G and VT",
    "p": "P",
    "f": "F",
    "x": "X",
    "inf": "Inf",
    "dl": "DL",
    "trn": "Trn",
    "hpc": "HPC",
    "u": "High Memory",
}


@dataclass(frozen=True)
class Quota:
    name: str
    code: str | None  # None: swarm does not know it; the list of EC2's quotas has it

    def page(self, region: str | None) -> str:
        host = f"{region}.console.aws.amazon.com" if region else "console.aws.amazon.com"
        tail = f"/{self.code}" if self.code else ""
        return f"https://{host}/servicequotas/home/services/ec2/quotas{tail}"


def bucket(instance_type: str | None) -> str | None:
    """'Standard (A, C, …)', 'G and VT', … of an instance type; None if unknown."""
    m = re.match(r"([a-z]+)", instance_type or "")
    if m is None:
        return None
    letters = m.group(1)
    return _STANDARD if letters in STANDARD_LETTERS else _BUCKETS.get(letters)


def quota_for(instance_type: str | None, spot: bool) -> Quota | None:
    name = bucket(instance_type)
    if name is None:
        return None
    code = _CODES.get(name, (None, None))[1 if spot else 0]
    if spot:
        return Quota(f"All {name} Spot Instance Requests", code)
    return Quota(f"Running On-Demand {name} instances", code)


def advice(code: str, instance_type: str | None, region: str | None) -> str:
    """The next step for a quota error: fewer instances, or a higher quota (named, with its
    page in the Service Quotas console)."""
    spot = code in SPOT_QUOTA_CODES
    quota = quota_for(instance_type, spot)
    where = f" for {region}" if region else ""
    if quota is None:
        raise_it = (
            f"request a higher {'spot' if spot else 'on-demand'} quota of the "
            f"{instance_type or 'instance'} family{where} at {Quota('', None).page(region)}"
        )
    else:
        code_note = f" ({quota.code})" if quota.code else ""
        raise_it = (
            f'request a higher "{quota.name}" quota{code_note}{where} at {quota.page(region)}'
        )
    steps = ["terminate other instances", "ask for fewer nodes"]
    if spot:
        steps.append("set [ec2] spot = false")
    return f"{', '.join(steps)}, or {raise_it}"
