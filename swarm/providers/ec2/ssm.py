"""connect = "ssm": SSH through AWS Systems Manager Session Manager, no port 22 open at all.

swarm's SSH connection to a node runs over `aws ssm start-session --document-name
AWS-StartSSHSession` as its ProxyCommand (AWS's own ssh_config entry: Systems Manager User
Guide, "Allow and control permissions for SSH connections through Session Manager"); the SSM
agent on the instance opens the node's sshd from inside, so the security group needs no SSH
rule. The agent needs an instance profile allowing AmazonSSMManagedInstanceCore: `[ec2]
instance_profile` names one (used, never deleted), else the stack gets its own role and
profile, both named `swarm-<stack>-<region>` (IAM is global; a stack is per region: the name
leaves docs/iam-policy.json scoping IAM to `swarm-*`) and tagged as the stack's other
resources at creation. Found again by that name and checked by its tags, so any machine's
`down` removes them.

Plain functions over a boto3 IAM client; callers wrap them in `aws_errors(...)`.
"""

from __future__ import annotations

import json
import shlex
import shutil
from collections.abc import Callable
from typing import Any

from swarm.errors import ProviderError, UsageError
from swarm.providers.ec2.errors import aws_message, error_code, transport_error
from swarm.providers.ec2.tags import REGION, STACK, tag_dict, tag_list

Client = Any
MANAGED_POLICY = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
DOCUMENT = "AWS-StartSSHSession"
PLUGIN_URL = (
    "https://docs.aws.amazon.com/systems-manager/latest/userguide/"
    "session-manager-working-with-install-plugin.html"
)
CLI_URL = "https://docs.aws.amazon.com/cli/latest/userguide/getting-started-install.html"
TOOLS = (("aws", CLI_URL), ("session-manager-plugin", PLUGIN_URL))
TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "ec2.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}
# IAM is eventually consistent: for some seconds a just-made instance profile is refused by
# RunInstances ("Invalid IAM Instance Profile name"). Terraform retries that for 2 minutes.
PROFILE_NOT_VISIBLE = "InvalidParameterValue: IAM instance profile not visible yet"  # ours
PROFILE_WAIT_S = 120.0


def check_tools(which: Callable[[str], str | None] = shutil.which) -> None:
    """The AWS CLI and its Session Manager plugin are on this machine's PATH (bad input,
    said before anything is launched)."""
    missing = [f"{tool} not found on PATH ({url})" for tool, url in TOOLS if which(tool) is None]
    if missing:
        raise UsageError(
            'connect = "ssm" needs the AWS CLI and the Session Manager plugin on this '
            f"machine: {'; '.join(missing)}"
        )


def proxy_command(region: str, profile: str | None) -> str:
    """The ProxyCommand of a node's SSH connection (%h: its instance id, %p: 22)."""
    words = ["aws", "ssm", "start-session", "--target", "%h", "--document-name", DOCUMENT]
    words += ["--parameters", "portNumber=%p", "--region", region]
    if profile:
        words += ["--profile", profile]
    return " ".join(shlex.quote(w) for w in words)


def profile_name(stack: str, region: str) -> str:
    return f"swarm-{stack}-{region}"  # <= 6 + 32 + 1 + 20: within IAM's 64 for a role


def launch_code(exc: BaseException) -> str:
    """RunInstances' refusal of a profile IAM has not shown EC2 yet -> PROFILE_NOT_VISIBLE
    (retried); any other failure -> its own code."""
    code = error_code(exc)
    if code == "InvalidParameterValue" and "Invalid IAM Instance Profile" in aws_message(exc):
        return PROFILE_NOT_VISIBLE
    return code or transport_error(exc)


def check_named_profile(iam: Client, name: str) -> None:
    """[ec2] instance_profile exists (it is the user's: swarm never changes it)."""
    if _get(lambda: iam.get_instance_profile(InstanceProfileName=name)) is None:
        raise ProviderError(
            f"instance profile {name!r} does not exist: fix [ec2] instance_profile, or leave "
            "it out and swarm makes one with AmazonSSMManagedInstanceCore"
        )


def _get(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except Exception as exc:
        if error_code(exc) == "NoSuchEntity":
            return None
        raise


def _ours(resource: dict[str, Any], kind: str, name: str, stack: str, region: str) -> bool:
    got = tag_dict(resource)
    if got.get(STACK) == stack and got.get(REGION) == region:
        return True
    raise ProviderError(
        f"an IAM {kind} named {name} exists but is not tagged as stack {stack}'s in {region}: "
        "delete it, or set [ec2] instance_profile"
    )


def _role(iam: Client, name: str, stack: str, region: str) -> dict[str, Any] | None:
    found = _get(lambda: iam.get_role(RoleName=name))
    if found is not None and _ours(found["Role"], "role", name, stack, region):
        return dict(found["Role"])
    return None


def _profile(iam: Client, name: str, stack: str, region: str) -> dict[str, Any] | None:
    found = _get(lambda: iam.get_instance_profile(InstanceProfileName=name))
    if found is not None and _ours(
        found["InstanceProfile"], "instance profile", name, stack, region
    ):
        return dict(found["InstanceProfile"])
    return None


def ensure_profile(iam: Client, stack: str, region: str, tags: dict[str, str]) -> str:
    """The stack's role and instance profile, made (and tagged) where missing, each step on
    its own: an `up` cut short between them is completed by the next -> the profile's name."""
    name = profile_name(stack, region)
    tags = {**tags, REGION: region}
    if _role(iam, name, stack, region) is None:
        iam.create_role(
            RoleName=name,
            AssumeRolePolicyDocument=json.dumps(TRUST),
            Description=f"swarm stack {stack} ({region}): the SSM agent on its nodes",
            Tags=tag_list(tags),
        )
    iam.attach_role_policy(RoleName=name, PolicyArn=MANAGED_POLICY)  # idempotent
    profile = _profile(iam, name, stack, region)
    if profile is None:
        profile = iam.create_instance_profile(InstanceProfileName=name, Tags=tag_list(tags))[
            "InstanceProfile"
        ]
    if not any(r.get("RoleName") == name for r in profile.get("Roles", [])):
        iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
    return name


def remove_profile(iam: Client, stack: str, region: str) -> list[str]:
    """Delete the stack's own instance profile and role (found by name, checked by tag);
    idempotent -> what was deleted."""
    name = profile_name(stack, region)
    gone = []
    profile = _profile(iam, name, stack, region)
    if profile is not None:
        for role in profile.get("Roles", []):
            iam.remove_role_from_instance_profile(
                InstanceProfileName=name, RoleName=role["RoleName"]
            )
        iam.delete_instance_profile(InstanceProfileName=name)
        gone.append(f"instance profile {name}")
    if _role(iam, name, stack, region) is not None:
        attached = iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]
        for policy in attached:
            iam.detach_role_policy(RoleName=name, PolicyArn=policy["PolicyArn"])
        iam.delete_role(RoleName=name)
        gone.append(f"role {name}")
    return gone
