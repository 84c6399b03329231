"""What a launch needs from AWS, looked up once per command: one command checks a launch,
then prepares and makes it, and from a laptop every EC2 call is 50-150 ms, one after another.

Each instance type's architecture and vCPUs (DescribeInstanceTypes), the image for each role,
the zones and subnets with room (placement), who may open port 22.
"""

from __future__ import annotations

from collections.abc import Callable

from swarm.models import Role
from swarm.providers.ec2 import launch, setup, ssm
from swarm.providers.ec2.aws import AwsClients
from swarm.providers.ec2.bastion import Bastion
from swarm.providers.ec2.errors import aws_errors
from swarm.providers.ec2.launch import Placement


class LaunchChecks:
    def __init__(
        self, aws: AwsClients, bastion: Bastion | None, progress: Callable[[str], None]
    ) -> None:
        self.aws, self.cfg, self.bastion, self.progress = aws, aws.cfg, bastion, progress
        self.vcpus: dict[str, int] = {}  # instance type -> vCPUs, when AWS said
        self._checked: dict[tuple[str, int], tuple[str, str]] = {}
        self._images: dict[Role, tuple[str, str]] | None = None
        self._placement: Placement | None = None
        self._sources: setup.SshFrom | None = None

    def settings(self, role: Role, count: int) -> tuple[str, str]:
        """(instance type, image id) for `count` nodes of `role`, once the AWS side of the
        launch is checked: the instance profile, both roles' types and images, zones and
        subnet room, the bastion."""
        if (role, count) in self._checked:
            return self._checked[role, count]
        aws = self.aws
        with aws_errors(f"check the launch settings of {count} {role} node(s)", aws.region):
            if self.cfg.connect == "ssm" and self.cfg.instance_profile:
                ssm.check_named_profile(aws.client("iam"), self.cfg.instance_profile)
            settings = self.images()[role]  # a typo in a type: said before any zone is
            self.placement().with_room(count)
            if self.bastion is not None:  # a bastion not found: said before a launch
                self.ssh_from(self.placement().vpc_id)
        self._checked[role, count] = settings
        return settings

    def images(self) -> dict[Role, tuple[str, str]]:
        """(instance type, image id) of both roles, whichever this command launches: a typo
        in worker_type must stop `up master` before it bills a master."""
        if self._images is None:
            aws = self.aws
            types = {Role.MASTER: self.cfg.master_type, Role.WORKER: self.cfg.worker_type}
            archs: dict[str, str] = {}
            for role, itype in types.items():
                if itype not in archs:
                    key = f"{role}_type"
                    archs[itype], vcpus = setup.instance_arch(aws.ec2, itype, aws.region, key)
                    if vcpus:
                        self.vcpus[itype] = vcpus
            ssm_client = aws.client("ssm")
            images = {
                arch: setup.resolve_ami(aws.ec2, ssm_client, self.cfg.ami, arch, aws.region)
                for arch in sorted(set(archs.values()))
            }
            self._images = {r: (t, images[archs[t]]) for r, t in types.items()}
        return self._images

    def placement(self) -> Placement:
        if self._placement is None:
            types = (self.cfg.master_type, self.cfg.worker_type)
            self._placement = launch.find_placement(
                self.aws.ec2, self.cfg.subnet_id, self.aws.region, types
            )
            for line in self._placement.skipped:
                self.progress(line)
        return self._placement

    def ssh_from(self, vpc_id: str) -> setup.SshFrom:
        """Who may open port 22."""
        if self._sources is None:
            ec2 = self.aws.ec2
            if self.bastion is not None:
                self._sources = self.bastion.ssh_from(
                    ec2, self.cfg.ssh_cidr, vpc_id, self.aws.region
                )
            elif self.cfg.connect == "ssm":  # no SSH rule at all: SSH comes from inside
                self._sources = setup.SshFrom()
            elif self.cfg.connect == "private" and not self.cfg.ssh_cidr:
                # The controller is inside the VPC (or reaches it through it): the VPC's own
                # range, not this machine's public address (a lookup that is wrong there).
                vpc = setup.vpc_cidr(ec2, vpc_id)
                self._sources = setup.SshFrom((setup.ssh_cidr(vpc),))
            else:
                self._sources = setup.SshFrom((setup.ssh_cidr(self.cfg.ssh_cidr),))
        return self._sources
