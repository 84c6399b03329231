"""EC2 provider: nodes are instances tagged `swarm:stack`/`swarm:role`; AWS is the only truth.

Every resource is tagged at creation (instances and their volumes, the stack's security
group `swarm-<stack>` and key pair `swarm-<stack>`; with connect = "ssm", its IAM role and
instance profile, ssm.py). Human messages go to `self.notices`
(the core drains and prints them); nothing here prints or sleeps outside a bounded waiter.
The generated private key lives at `key_path(stack)` =
`<state dir>/ec2/<region>/<stack>/id_swarm` (0600), next to the stack's `known_hosts`.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swarm import paths
from swarm.config import Config
from swarm.config.schema import Spot
from swarm.errors import ProviderError, UsageError
from swarm.models import Node, NodeState, Role, order_key, stack_expiry
from swarm.providers.base import Elsewhere, Provider, Stack
from swarm.providers.ec2 import (
    bastion,
    batches,
    launch,
    market,
    nodes,
    regions,
    setup,
    ssm,
    tags,
    teardown,
)
from swarm.providers.ec2.aws import (
    AwsClients,
    chunks,
)
from swarm.providers.ec2.checks import LaunchChecks
from swarm.providers.ec2.errors import aws_errors
from swarm.providers.ec2.pricing import PriceBook
from swarm.providers.ec2.tags import iso_utc
from swarm.remote import known_hosts, poweroff
from swarm.remote.base import DIRECT, Route, Runner

MAX_COUNT = 500
LIVE_STATES = ("pending", "running", "stopping", "stopped")  # shutting-down is on its way out
# IMDSv2 only, on every instance: what AWS recommends and what organizations' SCPs require
# (a RunInstances without it is denied outright there). Nothing swarm runs reads IMDS.
METADATA_OPTIONS = {"HttpTokens": "required", "HttpEndpoint": "enabled"}


@dataclass(frozen=True)
class _Prepared:
    group_id: str
    key_name: str
    instance_profile: str | None = None  # connect = "ssm"


class Ec2Provider(AwsClients, Provider):
    name = "ec2"
    expires = True
    # Seconds between waiter polls (tests may lower it). Instances take ~5-15 s to run and
    # ~30-60 s to terminate: a poll every 5 s overshot by 2.5 s on average, every 2 s by 1 s,
    # for 2-3 more DescribeInstances calls, far below EC2's request limits.
    poll_delay = 2.0
    terminate_timeout = 600.0  # bound on waiting for instances to be terminated
    # bound on retrying DeleteSecurityGroup while AWS still holds the group (Terraform: 5 min)
    group_delete_timeout = 300.0

    def __init__(self, config: Config, session: Any = None):
        Provider.__init__(self, config)
        AwsClients.__init__(self, config.ec2, session)
        self._prepared: dict[str, _Prepared] = {}
        self._created_by: str | None = None
        self._bastion = bastion.Bastion(config.ec2.bastion) if config.ec2.bastion else None
        self.checks = LaunchChecks(self, self._bastion, lambda line: self.progress(line))

    # ---- places, users, tags ----

    def state_dir(self, stack: Stack) -> Path:
        return paths.stack_dir("ec2", f"{self.region}/{stack.name}")

    def key_path(self, stack: Stack) -> Path:
        """The private key SSH uses: [ec2] key_file, else the one swarm generated."""
        if self.cfg.key_name and self.cfg.key_file:  # config: both or neither
            return self.config.resolve(self.cfg.key_file)
        return self.state_dir(stack) / "id_swarm"

    def ssh_user(self) -> str:
        return setup.ssh_user_for(self.cfg.ami, self.cfg.ssh_user)

    def created_by(self) -> str:
        if self._created_by is None:
            try:
                self._created_by = self.client("sts").get_caller_identity()["Arn"][:256]
            except Exception:
                self._created_by = "unknown"
        return self._created_by

    def _tags(self, stack: str, role: str, **extra: str) -> dict[str, str]:
        return tags.stack_tags(self.cfg.tags, stack, role, self.created_by(), **extra)

    # ---- Provider protocol ----

    def prepare(self, stack: Stack) -> None:
        """Security group and key pair of the stack: found by tag, created if missing."""
        tags.check_user_tags(self.cfg.tags)
        key_file = self.key_path(stack)
        if self.cfg.key_name:
            setup.check_key_file(key_file)
        over_ssm = self.cfg.connect == "ssm"  # no SSH rule at all: SSH comes from inside
        port = self.config.locust.master_port
        with aws_errors(
            f"prepare the security group and key pair of stack {stack.name}", self.region
        ):
            vpc_id = self.checks.placement().vpc_id  # one group per VPC: good in every zone
            shared = self._tags(stack.name, tags.STACK_ROLE)
            gid = setup.ensure_security_group(
                self.ec2, stack.name, vpc_id, self.checks.ssh_from(vpc_id), (port, port + 1), shared
            )
            if self.cfg.key_name:
                setup.check_user_key(self.ec2, self.cfg.key_name, key_file, self.region)
                key_name = self.cfg.key_name
            else:
                key_name = setup.ensure_key_pair(self.ec2, stack.name, key_file, shared)
        profile = self.cfg.instance_profile  # checked by check_launch
        if over_ssm and not profile:
            with aws_errors(f"prepare the instance profile of stack {stack.name}", self.region):
                profile = ssm.ensure_profile(self.client("iam"), stack.name, self.region, shared)
        self._prepared[stack.name] = _Prepared(gid, key_name, profile)

    def list_nodes(self, stack: Stack, role: Role | None = None) -> list[Node]:
        filters = tags.stack_filters(stack.name, role)
        filters.append({"Name": "instance-state-name", "Values": list(LIVE_STATES)})
        with aws_errors(f"list the instances of stack {stack.name}", self.region):
            nodes = [self._node(i) for i in self._describe(filters)]
        return sorted(nodes, key=order_key)

    def check_launch(self, stack: Stack, role: Role, count: int) -> None:
        """Role, count, tags, zones and subnet room, instance type and AMI: what a launch needs,
        checked before anything is created (the pipeline calls it before prepare)."""
        self._launch_settings(stack, role, count)

    def _launch_settings(self, stack: Stack, role: Role, count: int) -> tuple[str, str]:
        """check_launch's findings, looked up once per command -> (instance type, image id)"""
        if role not in tuple(Role):
            raise UsageError(f"unknown role {role!r}: use one of {', '.join(Role)}")
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
            raise UsageError(f"cannot launch {count!r} {role} node(s): ask for 1 to {MAX_COUNT}")
        tags.check_user_tags(self.cfg.tags)
        if self.cfg.key_name:
            setup.check_key_file(self.key_path(stack))
        if self.cfg.connect == "ssm":
            ssm.check_tools()
        return self.checks.settings(role, count)

    def _launch_in_zones(self, **params: Any) -> Any:
        """RunInstances in batches, zone after zone while one has no more capacity (no other
        with [ec2] subnet_id); says where the nodes are."""
        placement = self.checks.placement()
        role = tags.tag_dict({"Tags": params["TagSpecifications"][0]["Tags"]}).get(tags.ROLE)
        # spot that may fall back keeps what spot had room for; only the rest goes on-demand
        rest = "InstanceMarketOptions" in params and self.cfg.spot is Spot.PREFERRED
        done = batches.launch(
            self.ec2, params, placement, self.region, self.progress, f"{role} node(s)", rest
        )
        return {"Instances": done.instances}

    def create_nodes(self, stack: Stack, role: Role, count: int) -> list[Node]:
        itype, image_id = self._launch_settings(stack, role, count)
        if stack.name not in self._prepared:
            self.prepare(stack)
        prep = self._prepared[stack.name]
        # Who is launching (an STS call the first time, seconds on a busy machine) before the
        # clock is read: created-at and expires-at are then one TTL apart, not TTL - that call.
        self.created_by()
        # One expiry for the stack: later nodes power off with the master, not a TTL later.
        expires_at = stack_expiry(self.list_nodes(stack)) or time.time() + self.cfg.ttl
        vcpus = self.checks.vcpus
        cores = {"vcpus": str(vcpus[itype])} if itype in vcpus else {}
        new_tags = self._tags(
            stack.name, role, expires_at=iso_utc(expires_at), ssh_user=self.ssh_user(), **cores
        )
        nic: dict[str, Any] = {
            "DeviceIndex": 0,
            "Groups": [prep.group_id],
            "DeleteOnTermination": True,
        }
        if self.cfg.public_ip_wanted is not None:  # None: the subnet's default
            nic["AssociatePublicIpAddress"] = self.cfg.public_ip_wanted
        params: dict[str, Any] = dict(
            ImageId=image_id,
            InstanceType=itype,
            MinCount=count,
            MaxCount=count,
            KeyName=prep.key_name,
            UserData=poweroff.user_data(poweroff.minutes_until(expires_at, time.time())),
            InstanceInitiatedShutdownBehavior="terminate",
            MetadataOptions=METADATA_OPTIONS,
            NetworkInterfaces=[nic],
            TagSpecifications=[
                {"ResourceType": rt, "Tags": tags.tag_list(new_tags)}
                for rt in ("instance", "volume")
            ],
        )
        if prep.instance_profile:
            params["IamInstanceProfile"] = {"Name": prep.instance_profile}
        resp = market.launch(
            self._launch_in_zones,
            params,
            self.cfg.spot,
            f"{count} {itype} {role} node(s)",
            f"stack {stack.name}",
            self.region,
            self.progress,
        )
        instances = resp.get("Instances", [])
        try:
            if len(instances) != count:
                raise ProviderError(
                    f"EC2 launched {len(instances)} of {count} {role} node(s) for "
                    f"stack {stack.name}: retry"
                )
            for inst in instances:
                got = tags.tag_dict(inst)
                if got and got.get(tags.STACK) != stack.name:
                    raise ProviderError(
                        f"instance {inst['InstanceId']} came up without the swarm:stack tag: retry"
                    )
            return [self._node(inst, new_tags) for inst in instances]
        except BaseException:
            if instances:
                self.notices.append(
                    launch.terminate_quietly(self.ec2, [i["InstanceId"] for i in instances])
                )
            raise

    def wait_ready(self, stack: Stack, nodes: list[Node], timeout: float) -> list[Node]:
        ids = list(dict.fromkeys(n.id for n in nodes))
        if not ids:
            return []
        describe = f"describe the new instances of stack {stack.name}"
        with aws_errors(describe, self.region):
            found = {i["InstanceId"]: self._node(i) for i in launch.describe_ids(self.ec2, ids)}
        if any(n.state != NodeState.RUNNING for n in found.values()) or len(found) < len(ids):
            states = self._wait("instance_running", ids, timeout)
            if states is not None:
                raise ProviderError(
                    f"{len(ids)} instance(s) of stack {stack.name} did not reach "
                    f"'running' within {timeout:.0f}s ({states}): check the EC2 console, "
                    "or retry"
                )
            with aws_errors(describe, self.region):
                found = {i["InstanceId"]: self._node(i) for i in launch.describe_ids(self.ec2, ids)}
        missing = [i for i in ids if i not in found]
        if missing:
            raise ProviderError(f"instance(s) {', '.join(missing)} vanished while starting: retry")
        return [found[i] for i in ids]

    def terminate_nodes(self, stack: Stack, nodes: list[Node]) -> None:
        ids = list(dict.fromkeys(n.id for n in nodes))
        if not ids:
            return
        with aws_errors(f"terminate instances of stack {stack.name}", self.region):
            found = launch.describe_ids(self.ec2, ids)
            foreign = [
                i["InstanceId"] for i in found if tags.tag_dict(i).get(tags.STACK) != stack.name
            ]
            if foreign:
                raise ProviderError(
                    f"refusing to terminate {', '.join(foreign)}: not instances of "
                    f"stack {stack.name}"
                )
            live = [i["InstanceId"] for i in found if i["State"]["Name"] != "terminated"]
            for chunk in chunks(live):
                launch.terminate(self.ec2, chunk)
        # Their addresses go to the next instances, with new host keys: forget theirs.
        known_hosts.forget(
            self.state_dir(stack) / "known_hosts", [n.ssh.host for n in nodes if n.ssh is not None]
        )
        states = self._wait("instance_terminated", live, self.terminate_timeout) if live else None
        if states is not None:
            raise ProviderError(
                f"instances of stack {stack.name} were not terminated within "
                f"{self.terminate_timeout:.0f}s ({states}): run the command again"
            )

    def cleanup(self, stack: Stack) -> None:
        """Delete the stack's security group(s), its own key pair and local key; idempotent."""
        with aws_errors(f"clean up stack {stack.name}", self.region):
            left = self._describe(
                tags.stack_filters(stack.name)
                + [{"Name": "instance-state-name", "Values": [*LIVE_STATES, "shutting-down"]}]
            )
            live = [i["InstanceId"] for i in left if i["State"]["Name"] != "shutting-down"]
            if live:
                raise ProviderError(
                    f"stack {stack.name} still has {len(live)} instance(s) "
                    f"({', '.join(live[:5])}): terminate them first"
                )
        dying = [i["InstanceId"] for i in left]
        if dying and self._wait("instance_terminated", dying, self.terminate_timeout) is not None:
            raise ProviderError(
                f"instances of stack {stack.name} are still shutting down: "
                "run the command again in a minute"
            )
        # The key pair first: nothing holds it. The group stays held by the terminated
        # instances' network interfaces for a while (DependencyViolation): retried, bounded.
        with aws_errors(f"delete the key pair of stack {stack.name}", self.region):
            for pair in setup.find_key_pairs(self.ec2, stack.name):
                self.ec2.delete_key_pair(KeyName=pair["KeyName"])
        if not self.cfg.key_name:
            setup.remove_local_key(self.key_path(stack))
        if self.cfg.connect == "ssm" and not self.cfg.instance_profile:  # a named one stays
            with aws_errors(f"delete the instance profile of stack {stack.name}", self.region):
                ssm.remove_profile(self.client("iam"), stack.name, self.region)
        with aws_errors(f"delete the security group of stack {stack.name}", self.region):
            for group in setup.find_security_groups(self.ec2, stack.name):
                self._delete_group(stack, group["GroupId"])
        self._prepared.pop(stack.name, None)

    def _delete_group(self, stack: Stack, gid: str) -> None:
        teardown.delete_group(self.ec2, stack.name, gid, self.group_delete_timeout, self.progress)

    def set_expiry(self, stack: Stack, nodes: list[Node], expires_at: float) -> None:
        """Re-tag the nodes' instances and volumes with the stack's new expiry."""
        ids = [n.id for n in nodes]
        with aws_errors(f"tag the new expiry of stack {stack.name}", self.region):
            found = [
                i
                for chunk in chunks(ids)
                for i in self._describe([{"Name": "instance-id", "Values": chunk}])
            ]
            volumes = [
                m["Ebs"]["VolumeId"] for i in found for m in i.get("BlockDeviceMappings", [])
            ]
            tag = tags.tag_list({tags.EXPIRES_AT: iso_utc(expires_at)})
            for chunk in chunks(ids + volumes):
                self.ec2.create_tags(Resources=chunk, Tags=tag)

    def runner(self, stack: Stack, node: Node) -> Runner:
        from swarm.remote.ssh import SSHRunner  # paramiko: only when a node is reached

        if node.ssh is None:
            kind = "public" if self.cfg.connect == "public" else "private"
            raise ProviderError(
                f"node {node.name or node.id} has no {kind} IP address: "
                'set [ec2] connect = "private" or "public" to match your network'
            )
        route = self._bastion.route() if self._bastion is not None else DIRECT
        if self.cfg.connect == "ssm":  # node.ssh.host is the instance id
            ssm.check_tools()
            route = Route(proxy_command=ssm.proxy_command(self.region, self.cfg.profile))
        return SSHRunner(
            host=node.ssh.host,
            port=node.ssh.port,
            user=node.ssh.user,
            key_file=self.key_path(stack),
            known_hosts=self.state_dir(stack) / "known_hosts",
            label=node.name or node.id,
            route=route,
        )

    def price_book(self) -> PriceBook:
        return PriceBook(self)

    def other_regions(self, stack: Stack, everywhere: bool) -> list[Elsewhere]:
        return regions.elsewhere(
            self.session, self.region, stack.name, list(LIVE_STATES), everywhere
        )

    def in_region(self, region: str) -> Ec2Provider:
        ec2 = dataclasses.replace(self.cfg, region=region)
        return Ec2Provider(dataclasses.replace(self.config, ec2=ec2), self.session)

    # ---- helpers ----

    def _describe(self, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
        pages = self.ec2.get_paginator("describe_instances").paginate(Filters=filters)
        return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]

    def _wait(self, waiter_name: str, ids: list[str], timeout: float) -> str | None:
        return launch.wait(self.ec2, waiter_name, ids, timeout, self.poll_delay, self.region)

    def _node(self, inst: dict[str, Any], fallback_tags: dict[str, str] | None = None) -> Node:
        return nodes.node_of(inst, self.cfg.connect, self.ssh_user(), fallback_tags)
