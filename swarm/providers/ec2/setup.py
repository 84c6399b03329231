"""EC2 launch settings: AMI, security group, key pair, TTL user data, public IP (the subnets
and zones are launch.py's).

Plain functions over a boto3 EC2/SSM client; callers wrap them in `aws_errors(...)`.
Shared resources are found by tags (`swarm:stack`, `swarm:role = "stack"`), never by a
local file.
"""

from __future__ import annotations

import ipaddress
import os
import stat
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swarm import paths
from swarm.config.schema import AMI_ALIASES
from swarm.errors import ConfigError, ProviderError
from swarm.providers.ec2.aws import JUST_CREATED, JUST_CREATED_WAIT_S, retry_while
from swarm.providers.ec2.errors import error_code, expect
from swarm.providers.ec2.tags import STACK_ROLE, stack_filters, tag_list

CHECKIP_URL = "https://checkip.amazonaws.com"
# A boto3 client: boto3 ships no types (the stubs are a separate, large package).
Client = Any


# ---- AMI ----


def ssh_user_for(ami: str, configured: str | None) -> str:
    if configured:
        return configured
    return AMI_ALIASES[ami][0] if ami in AMI_ALIASES else "ubuntu"


def instance_arch(
    ec2: Client, instance_type: str, region: str, key: str = "master_type / worker_type"
) -> tuple[str, int | None]:
    """('x86_64' or 'arm64', its vCPUs) for an instance type (clear error, naming the config
    `key`, if the type doesn't exist)."""
    try:
        types = ec2.describe_instance_types(InstanceTypes=[instance_type])["InstanceTypes"]
    except Exception as exc:
        if error_code(exc) != "InvalidInstanceType":
            raise
        types = []
    if not types:
        raise ProviderError(
            f"instance type {instance_type!r} does not exist in {region}: fix [ec2] {key}"
        )
    archs = types[0].get("ProcessorInfo", {}).get("SupportedArchitectures", [])
    vcpus = types[0].get("VCpuInfo", {}).get("DefaultVCpus")
    arch = "arm64" if archs and "x86_64" not in archs and "arm64" in archs else "x86_64"
    return arch, vcpus if isinstance(vcpus, int) and vcpus > 0 else None


def resolve_ami(ec2: Client, ssm: Client, ami: str, arch: str, region: str) -> str:
    """An AMI alias (through its public SSM parameter) or ami-… id -> a checked image id."""
    if ami in AMI_ALIASES:
        param = AMI_ALIASES[ami][1 if arch == "x86_64" else 2]
        with expect(
            "ParameterNotFound",
            f"AMI alias {ami!r} ({arch}) has no public SSM parameter {param} in "
            f"{region}: set [ec2] ami to an ami-… id",
        ):
            image_id = ssm.get_parameter(Name=param)["Parameter"]["Value"]
    else:
        image_id = ami
    try:
        images = ec2.describe_images(ImageIds=[image_id])["Images"]
    except Exception as exc:
        if not error_code(exc).startswith("InvalidAMIID"):
            raise
        images = []
    if not images:
        raise ProviderError(
            f"AMI {image_id} ({ami}) not found in {region}: set [ec2] ami to an "
            "alias (ubuntu-24.04, ubuntu-22.04, al2023) or an ami-… id of this region"
        )
    image = images[0]
    if image.get("State", "available") != "available":
        raise ProviderError(
            f"AMI {image_id} is {image['State']}, not available: pick another [ec2] ami"
        )
    if image.get("Architecture", arch) != arch:
        raise ProviderError(
            f"AMI {image_id} is {image['Architecture']} but the instance type is "
            f"{arch}: make [ec2] ami and the instance types match"
        )
    return image_id


# ---- network ----


def vpc_cidr(ec2: Client, vpc_id: str) -> str:
    """The VPC's primary IPv4 range: where a controller on connect = "private" sits."""
    return str(ec2.describe_vpcs(VpcIds=[vpc_id])["Vpcs"][0]["CidrBlock"])


def lookup_public_ip(timeout: float = 5.0) -> str:
    """This machine's public address as AWS sees it (one HTTPS GET, bounded by `timeout`)."""
    try:
        with urllib.request.urlopen(CHECKIP_URL, timeout=timeout) as resp:  # noqa: S310
            text = resp.read(100).decode("ascii", "replace").strip()
        return str(ipaddress.ip_address(text))
    except (OSError, ValueError) as exc:
        raise ProviderError(
            f"could not look up this machine's public IP at {CHECKIP_URL} ({exc}): "
            'set [ec2] ssh_cidr = "<your ip>/32"'
        ) from exc


def ssh_cidr(configured: str | None) -> str:
    """The network SSH is opened to: [ec2] ssh_cidr (or the VPC's range, for connect =
    "private"), else this machine's address /32 (/128)."""
    if configured:
        net = ipaddress.ip_network(configured, strict=False)
    else:
        net = ipaddress.ip_network(lookup_public_ip())  # a host address: /32 or /128
    if net.prefixlen == 0:
        raise ProviderError(
            f"refusing to open SSH to the whole internet ({net}): set [ec2] "
            "ssh_cidr to your own address or network"
        )
    return str(net)


@dataclass(frozen=True)
class SshFrom:
    """Who may open port 22 of the stack's instances: networks, or security groups (a
    bastion's); nothing else ever."""

    cidrs: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()


def _ip_ranges(cidr: str) -> dict[str, Any]:
    if ipaddress.ip_network(cidr).version == 6:
        return {"Ipv6Ranges": [{"CidrIpv6": cidr, "Description": "swarm: SSH from the controller"}]}
    return {"IpRanges": [{"CidrIp": cidr, "Description": "swarm: SSH from the controller"}]}


SSH_GROUP_NOTE = "swarm: SSH from the bastion"
LOCUST_GROUP_NOTE = "swarm: Locust master/workers"


def _rule_keys(perm: dict[str, Any]) -> list[tuple]:
    """One comparable key per source in an IpPermission."""
    head = (perm.get("IpProtocol"), perm.get("FromPort"), perm.get("ToPort"))
    nets = [r["CidrIp"] for r in perm.get("IpRanges", [])]
    nets += [r["CidrIpv6"] for r in perm.get("Ipv6Ranges", [])]
    keys = [head + ("cidr", str(ipaddress.ip_network(n, strict=False))) for n in nets]
    keys += [head + ("group", g["GroupId"]) for g in perm.get("UserIdGroupPairs", [])]
    keys += [head + ("prefix", p["PrefixListId"]) for p in perm.get("PrefixListIds", [])]
    return keys


def _permission(key: tuple) -> dict[str, Any]:
    proto, lo, hi, kind, value = key
    perm: dict[str, Any] = {"IpProtocol": proto}
    if lo is not None:
        perm.update(FromPort=lo, ToPort=hi)
    if kind == "cidr":
        perm.update(_ip_ranges(value))
    elif kind == "group":
        note = SSH_GROUP_NOTE if lo == 22 else LOCUST_GROUP_NOTE
        perm["UserIdGroupPairs"] = [{"GroupId": value, "Description": note}]
    else:
        perm["PrefixListIds"] = [{"PrefixListId": value}]
    return perm


def find_security_groups(
    ec2: Client, stack: str, vpc_id: str | None = None
) -> list[dict[str, Any]]:
    filters = stack_filters(stack, STACK_ROLE)
    if vpc_id:
        filters.append({"Name": "vpc-id", "Values": [vpc_id]})
    return ec2.describe_security_groups(Filters=filters)["SecurityGroups"]


def ensure_security_group(
    ec2: Client,
    stack: str,
    vpc_id: str,
    ssh_from: SshFrom,
    locust_ports: tuple[int, int],
    tags: dict[str, str],
) -> str:
    """The stack's group in this VPC, created if missing, with exactly swarm's ingress rules:
    SSH 22 from `ssh_from` (nobody: connect = "ssm"), Locust `locust_ports` from the group
    itself; nothing else."""
    for cidr in ssh_from.cidrs:
        if ipaddress.ip_network(cidr).prefixlen == 0:
            raise ProviderError(
                f"refusing to open SSH to the whole internet ({cidr}): set [ec2] ssh_cidr"
            )
    found = find_security_groups(ec2, stack, vpc_id)
    if found:
        group = found[0]
    else:
        name = f"swarm-{stack}"
        with expect(
            "InvalidGroup.Duplicate",
            f"a security group named {name} already exists in {vpc_id} but is "
            "not tagged as swarm's: delete or rename it",
        ):
            gid = ec2.create_security_group(
                GroupName=name,
                VpcId=vpc_id,
                Description=f"swarm stack {stack}: "
                + ("SSH from the controller, " if ssh_from.cidrs or ssh_from.groups else "")
                + "Locust inside the group",
                TagSpecifications=[{"ResourceType": "security-group", "Tags": tag_list(tags)}],
            )["GroupId"]
        group = {"GroupId": gid, "IpPermissions": []}
    gid = group["GroupId"]
    want = {("tcp", locust_ports[0], locust_ports[1], "group", gid)}
    want |= {("tcp", 22, 22, "cidr", c) for c in ssh_from.cidrs}
    want |= {("tcp", 22, 22, "group", g) for g in ssh_from.groups}
    have = {k for perm in group.get("IpPermissions", []) for k in _rule_keys(perm)}
    extra, missing = sorted(have - want, key=str), sorted(want - have, key=str)
    # A group just created may not be found yet by the next call (eventual consistency).
    for change, keys in (
        (ec2.revoke_security_group_ingress, extra),
        (ec2.authorize_security_group_ingress, missing),
    ):
        if keys:
            perms = [_permission(k) for k in keys]
            retry_while(
                lambda: change(GroupId=gid, IpPermissions=perms),  # noqa: B023 - called in this turn
                JUST_CREATED,
                JUST_CREATED_WAIT_S,
            )
    return gid


# ---- key pairs ----


def check_key_file(path: Path) -> None:
    """Bad input on this machine (exit 2), found before AWS is asked anything."""
    if not path.is_file():
        raise ConfigError(f"SSH key file {path} not found: fix [ec2] key_file")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(
            f"SSH key file {path} is readable by others (mode {mode:o}): run `chmod 600 {path}`"
        )


def check_user_key(ec2: Client, key_name: str, key_file: Path, region: str) -> None:
    """[ec2] key_name + key_file: the pair exists in AWS and the file is private."""
    check_key_file(key_file)
    with expect(
        "InvalidKeyPair.NotFound",
        f"key pair {key_name!r} does not exist in {region}: fix [ec2] key_name, "
        "or leave key_name/key_file out and swarm makes one",
    ):
        ec2.describe_key_pairs(KeyNames=[key_name])


def find_key_pairs(ec2: Client, stack: str) -> list[dict[str, Any]]:
    return ec2.describe_key_pairs(Filters=stack_filters(stack, STACK_ROLE))["KeyPairs"]


def ensure_key_pair(ec2: Client, stack: str, key_path: Path, tags: dict[str, str]) -> str:
    """The stack's own key pair (tagged), its private key saved 0600 at `key_path`."""
    name = f"swarm-{stack}"
    found = find_key_pairs(ec2, stack)
    if found:
        if not key_path.is_file():
            raise ProviderError(
                f"key pair {found[0]['KeyName']} exists in AWS but its private key {key_path} is "
                "missing and cannot be recovered: terminate the stack's nodes and run cleanup "
                "(`swarm down`), or delete the key pair, then start again"
            )
        check_key_file(key_path)
        return found[0]["KeyName"]
    with expect(
        "InvalidKeyPair.Duplicate",
        f"a key pair named {name} already exists but is not tagged as swarm's: "
        "delete it, or set [ec2] key_name and key_file",
    ):
        created = ec2.create_key_pair(
            KeyName=name,
            KeyType="ed25519",
            TagSpecifications=[{"ResourceType": "key-pair", "Tags": tag_list(tags)}],
        )
    try:
        paths.write_private(key_path, created["KeyMaterial"].rstrip("\n") + "\n")
    except BaseException:
        ec2.delete_key_pair(KeyName=name)
        raise
    return name


def remove_local_key(key_path: Path) -> None:
    """Forget the stack's generated key and its known_hosts; drop the folder when empty."""
    for p in (key_path, key_path.with_name("known_hosts")):
        try:
            p.unlink()
        except FileNotFoundError:
            pass
    try:
        os.rmdir(key_path.parent)
    except OSError:
        pass
