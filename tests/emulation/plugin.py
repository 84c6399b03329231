"""pytest plugin: offline EC2 (moto) + emulated SSH hosts + network guard.

Enable with ``pytest_plugins = ["tests.emulation.plugin"]`` in the top-level
conftest (or ``-p tests.emulation.plugin``).  Run the suite through
``python tests/run_in_lab.py -- python -m pytest ...`` so that everything
lives in a namespace without a route out.

Fixtures
--------
netguard (session, autouse)
    socket guard: only loopback and 10.77.0.0/16 may be connected to.
lab (session) -> Lab
    the bridge (10.77.1.1/24) in the current network namespace.
emulated_hosts (function) -> factory ``make(n=1, *, dead=False, **options) -> HostSet``
    (``options``: more ``Lab.add_host`` kwargs, e.g. ``private_dirs``, ``env``)
    ``HostSet(hosts: list[Host], key_path: Path)``; a fresh ed25519 key pair
    per call (private key 0600 at key_path, public at key_path + ".pub");
    hosts get addresses from 10.77.1.100 up and are removed after the test.
emulated_ec2 (session) -> EmulatedEC2
    moto server on 127.0.0.1, instances in the lab subnet become hosts.
ec2_env (function) -> Ec2Env(env: dict, subnet_id: str)
    resets moto + hosts, creates VPC 10.77.0.0/16 + subnet 10.77.1.0/24; env
    is what a CLI subprocess needs (AWS_ENDPOINT_URL, fake credentials, ...).
    Resets again afterwards, failing the test if host creation failed.
bridge_target (function) -> swarm.demo.target.TargetServer on 10.77.1.1, port 0.
public_bridge (function) -> lab.Bridge: a second bridge, 10.88.1.0/24 (the controller on .1).
bastion (function) -> Bastion: an EC2 instance launched in the lab subnet with a public IP its
    host owns on ``public_bridge``, its own security group allowing 22 from the controller's
    public-side address only, the test's key pair; terminated afterwards.
cut_off (function): the controller cannot open connections into the lab subnet
    (``Lab.cut_off``): instances are reached through the bastion only.

Without root / ``ip netns`` / sshd the fixtures above (except netguard) skip
the test -- or fail it when ``CI`` is true: CI never silently skips.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, NamedTuple

import pytest

from .guard import install_guard
from .host import SSHD, Host
from .lab import Bridge, Lab

if TYPE_CHECKING:
    from .ec2 import EmulatedEC2

LAB_NETWORKS = ("10.77.0.0/16",)
PUBLIC_SUBNET = "10.88.1.0/24"

_reason_cache: list[str | None] = []


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def emulation_unavailable_reason() -> str | None:
    """None when hosts can be emulated here, else why not (cached)."""
    if _reason_cache:
        return _reason_cache[0]
    reason = None
    if os.geteuid() != 0:
        reason = "host emulation needs root"
    elif not os.access(SSHD, os.X_OK):
        reason = f"{SSHD} not found (apt-get install openssh-server)"
    else:
        for tool in ("ip", "unshare", "nsenter", "ssh-keygen", "iptables-restore"):
            if not shutil.which(tool):
                reason = f"`{tool}` not found"
                break
    if reason is None:
        try:
            proc = subprocess.run(["ip", "netns", "list"], capture_output=True, timeout=10)
            if proc.returncode != 0:
                reason = "`ip netns` does not work here"
            else:
                # can we really create namespaces (CAP_SYS_ADMIN)?  anonymous,
                # nothing to clean up
                proc = subprocess.run(["unshare", "--net", "--mount", "--pid", "--fork",
                                       "true"], capture_output=True, timeout=10)
                if proc.returncode != 0:
                    reason = ("cannot create namespaces: "
                              + proc.stderr.decode(errors="replace").strip())
        except (OSError, subprocess.SubprocessError) as exc:
            reason = f"namespace tools failed: {exc}"
    _reason_cache.append(reason)
    return reason


def emulation_available() -> bool:
    return emulation_unavailable_reason() is None


def require_emulation() -> None:
    """Skip (fail when CI=true) if hosts cannot be emulated here."""
    reason = emulation_unavailable_reason()
    if reason is None:
        return
    if _in_ci():
        pytest.fail(f"host emulation unavailable in CI: {reason}", pytrace=False)
    pytest.skip(f"host emulation unavailable: {reason}")


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "emulation: needs root, network namespaces and sshd")


def pytest_report_header(config) -> str:
    lab = os.environ.get("SWARM_LAB")
    if lab:
        return f"network lab: {lab} (no route out)"
    return ("network lab: NONE -- not started through tests/run_in_lab.py; "
            "only the in-process guard protects the network")


# ---------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="session", autouse=True)
def netguard():
    uninstall = install_guard(LAB_NETWORKS)
    try:
        yield
    finally:
        uninstall()


@pytest.fixture(scope="session")
def lab():
    require_emulation()
    with Lab() as the_lab:
        yield the_lab
    left = {kind: items for kind, items in the_lab.leftovers().items() if items}
    if left:
        pytest.fail(f"emulation lab left things behind: {left}", pytrace=False)


class HostSet(NamedTuple):
    hosts: list[Host]
    key_path: Path


def make_ed25519_keypair(path: Path, comment: str = "swarm-test") -> str:
    """Write an OpenSSH ed25519 private key (0600) at ``path`` and its public
    line at ``path.pub``; returns the public line."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    public = f"{public} {comment}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private)
    os.chmod(path, 0o600)
    Path(f"{path}.pub").write_text(public + "\n")
    return public


@pytest.fixture
def emulated_hosts(lab, tmp_path):
    created: list[Host] = []
    calls = 0

    def make(n: int = 1, *, dead: bool | str = False, **options) -> HostSet:
        nonlocal calls
        key_path = tmp_path / f"id_ed25519_{calls}"
        calls += 1
        public = make_ed25519_keypair(key_path)
        hosts = lab.add_hosts([{"authorized_key": public, "dead": dead, **options}
                               for _ in range(n)])
        created.extend(hosts)
        return HostSet(hosts, key_path)

    yield make
    errors = []
    for host in created:
        try:
            host.remove()
        except Exception as exc:  # noqa: BLE001
            errors.append(f"{host.name}: {exc}")
    if errors:
        pytest.fail("removing emulated hosts failed: " + "; ".join(errors), pytrace=False)


@pytest.fixture(scope="session")
def emulated_ec2(lab):
    from .ec2 import EmulatedEC2

    with EmulatedEC2(lab) as ec2:
        ec2.seed_ssm_ubuntu_params()
        yield ec2


class Ec2Env(NamedTuple):
    env: dict
    subnet_id: str


@pytest.fixture
def ec2_env(emulated_ec2):
    emulated_ec2.reset()
    subnet_id = emulated_ec2.make_subnet()
    yield Ec2Env(emulated_ec2.env(), subnet_id)
    errors = list(emulated_ec2.errors)
    emulated_ec2.reset()
    if errors:
        pytest.fail("emulated EC2 errors: " + "; ".join(errors), pytrace=False)


@pytest.fixture
def bridge_target(lab):
    from swarm.demo.target import start

    server = start(lab.bridge_ip, 0)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def public_bridge(lab):
    bridge = lab.add_bridge(PUBLIC_SUBNET)
    try:
        yield bridge
    finally:
        lab.remove_bridge(bridge)


class Bastion(NamedTuple):
    instance_id: str
    host: Host
    address: str      # its moto public IP, owned by its host on the public bridge
    group_id: str     # its own security group
    key_path: Path    # the private key of the key pair it was launched with
    user: str


@contextlib.contextmanager
def long_since(ec2: "EmulatedEC2") -> Iterator[None]:
    """What a test sets up inside is as if it had existed long before: found at once (no
    eventual consistency), its sshd answering."""
    q = ec2.quirks
    saved = (q.group_not_found, q.key_not_found, q.instance_not_found, q.sshd_late_s)
    q.group_not_found = q.key_not_found = q.instance_not_found = False
    q.sshd_late_s = 0.0
    try:
        yield
    finally:
        q.group_not_found, q.key_not_found, q.instance_not_found, q.sshd_late_s = saved


def launch_bastion(ec2: "EmulatedEC2", bridge: Bridge, subnet_id: str, key_path: Path) -> Bastion:
    """An instance as a team's bastion is: public IP, SSH open to the controller only."""
    instance_id, host, gid = launch_in_lab(ec2, subnet_id, "bastion", key_path,
                                           {"IpRanges": [{"CidrIp": f"{bridge.ip}/32"}]},
                                           public_bridge=bridge)
    return Bastion(instance_id, host, host.public_ip, gid, key_path, host.user)


def launch_in_lab(ec2: "EmulatedEC2", subnet_id: str, name: str, key_path: Path,
                  ssh_from: dict, public_bridge: Bridge | None = None) -> tuple[str, Host, str]:
    """One instance the test owns, long since there (``long_since``): key pair `name` (private
    key at `key_path`), its own group `name` taking port 22 from `ssh_from` (the sources of an
    IpPermission), a public IP owned on `public_bridge` or none. -> (id, host, group id)"""
    from .ec2 import UBUNTU_AMI

    with long_since(ec2):
        client = ec2.client()
        public = make_ed25519_keypair(key_path, name)
        client.import_key_pair(KeyName=name, PublicKeyMaterial=public.encode())
        vpc = client.describe_subnets(SubnetIds=[subnet_id])["Subnets"][0]["VpcId"]
        gid = client.create_security_group(GroupName=name, Description=name,
                                           VpcId=vpc)["GroupId"]
        client.authorize_security_group_ingress(GroupId=gid, IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, **ssh_from}])
        before = ec2.host_options
        if public_bridge is not None:
            ec2.host_options = lambda ip, index: {"public_bridge": public_bridge}
        try:
            inst = client.run_instances(
                ImageId=UBUNTU_AMI, InstanceType="t3.micro", MinCount=1, MaxCount=1,
                KeyName=name, NetworkInterfaces=[{
                    "DeviceIndex": 0, "SubnetId": subnet_id, "Groups": [gid],
                    "AssociatePublicIpAddress": public_bridge is not None}])["Instances"][0]
        finally:
            ec2.host_options = before
    return inst["InstanceId"], ec2.host_for(inst["InstanceId"]), gid


@pytest.fixture
def bastion(emulated_ec2, ec2_env, public_bridge, tmp_path):
    made = launch_bastion(emulated_ec2, public_bridge, ec2_env.subnet_id,
                          tmp_path / "bastion_key")
    yield made
    emulated_ec2.client().terminate_instances(InstanceIds=[made.instance_id])


@pytest.fixture
def cut_off(lab):
    with lab.cut_off():
        yield
