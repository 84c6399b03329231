"""docs/iam-policy.json stays true: the full cycle runs against the emulated cloud, which logs
every (service, action, region) it serves, and every action swarm called must be allowed by the
policy; every action the policy allows must be one the cycle used or one named below with the
path that uses it. The CLI runs in a subprocess, as users run it.

To record another command, add it to STEPS and, if it calls something new, add that action to
the policy."""
from __future__ import annotations

import json

from tests.helpers import REPO, swarm
from tests.reliability import ec2_toml, fast_bootstrap, instances

STACK = "iam"
POLICY = REPO / "docs" / "iam-policy.json"
TARGET = "{target}"  # replaced by the lab's target URL

# The recorded cycle, in order. `--config spot.toml`: the same stack with spot = true and
# another ssh_cidr (so the group's rules are revoked and authorized again).
STEPS: list[tuple[str, ...]] = [
    ("up", "master"),
    ("up", "workers", "-n", "2"),
    ("run", "-H", TARGET, "-f", "viral_load.py", "--headless", "-u", "2", "-r", "2", "-t", "2s"),
    ("status",),
    ("status", "--json"),
    ("extend", "3h"),
    ("--config", "spot.toml", "up", "workers", "-n", "3"),
    ("status",),
    ("down", "workers"),
    ("down",),
]

# Called, but needs no permission: AWS answers it for any identity.
NO_PERMISSION = {"sts:GetCallerIdentity"}

# In the policy, not called by the cycle above: each with the path that needs it.
NOT_IN_THE_CYCLE = {
    # With no [ec2] subnet_id: the default subnets whose zone offers both instance types.
    "ec2:DescribeInstanceTypeOfferings": "zone choice without subnet_id",
    # AWS creates the spot service-linked role on an account's first spot launch, as the
    # caller: without this, that launch fails with AuthFailure.ServiceLinkedRoleCreationNotPermitted.
    "iam:CreateServiceLinkedRole": "the account's first spot launch (AWS calls it)",
}

# In the policy for connect = "ssm" only (the stack's own role and instance profile, sessions
# to its nodes): tests/test_ssm.py runs that flow, checks that the policy allows every call it
# makes, and that its IAM calls are exactly the "called" ones. The others are checked by AWS
# inside another call, or made by the AWS CLI outside swarm.
SSM_ONLY = {
    **dict.fromkeys(
        ("iam:GetRole", "iam:CreateRole", "iam:DeleteRole", "iam:ListAttachedRolePolicies",
         "iam:AttachRolePolicy", "iam:DetachRolePolicy", "iam:GetInstanceProfile",
         "iam:CreateInstanceProfile", "iam:AddRoleToInstanceProfile",
         "iam:RemoveRoleFromInstanceProfile", "iam:DeleteInstanceProfile"), "called"),
    "iam:TagRole": "CreateRole with tags (tagged at creation)",
    "iam:TagInstanceProfile": "CreateInstanceProfile with tags",
    "iam:PassRole": "AddRoleToInstanceProfile, and RunInstances with the instance profile",
    "ssm:StartSession": "the AWS CLI's `aws ssm start-session` (the nodes' ProxyCommand)",
    "ssm:TerminateSession": "the Session Manager plugin, when an SSH connection ends",
}


def policy_actions() -> set[str]:
    doc = json.loads(POLICY.read_text())
    actions: set[str] = set()
    for st in doc["Statement"]:
        assert st["Effect"] == "Allow"
        got = st["Action"]
        actions |= {got} if isinstance(got, str) else set(got)
    assert not any("*" in a for a in actions), actions          # minimal: no wildcards
    return actions


def test_the_policy_allows_every_call_of_the_full_cycle_and_nothing_else(
        workdir, cli_env, ec2_env, emulated_ec2, bridge_target):
    base = ec2_toml(workdir, ec2_env.subnet_id, name=STACK)
    # no ssh_cidr: connect = "private" opens SSH to the VPC's range (DescribeVpcs)
    base.write_text(base.read_text().replace('ssh_cidr = "10.77.0.0/16"\n', ""))
    spot = ec2_toml(workdir, ec2_env.subnet_id, name=STACK, file="spot.toml",
                    ec2_extra="spot = true\n")
    spot.write_text(spot.read_text().replace('ssh_cidr = "10.77.0.0/16"', 'ssh_cidr = "10.77.1.0/24"'))
    fast_bootstrap(workdir)
    env = {**cli_env, **ec2_env.env}

    used: dict[str, tuple[str, ...]] = {}             # IAM action -> first step that called it
    for step in STEPS:
        args = tuple(bridge_target.url if a == TARGET else a for a in step)
        start = len(emulated_ec2.calls)
        res = swarm(*args, cwd=workdir, env=env, timeout=240)
        assert res.code == 0, (step, res.err)
        for service, action, _ in emulated_ec2.calls[start:]:
            used.setdefault(f"{service}:{action}", step)
    ec2 = emulated_ec2.client()
    assert instances(ec2, STACK) == []
    assert "ec2:RunInstances" in used and "pricing:GetProducts" in used, used
    assert "ec2:DescribeSpotPriceHistory" in used and "ec2:RevokeSecurityGroupIngress" in used

    allowed = policy_actions()
    missing = sorted(set(used) - NO_PERMISSION - allowed)
    assert missing == [], f"swarm calls these, docs/iam-policy.json does not allow them: " \
                          f"{ {a: used[a] for a in missing} }"
    unused = sorted(allowed - set(used) - set(NOT_IN_THE_CYCLE) - set(SSM_ONLY))
    assert unused == [], f"the policy allows these and nothing calls them: {unused}"
    stale = sorted((set(NOT_IN_THE_CYCLE) | set(SSM_ONLY)) - allowed)
    assert stale == [], f"NOT_IN_THE_CYCLE names actions the policy no longer has: {stale}"
    assert not NO_PERMISSION & allowed
