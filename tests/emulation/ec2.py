"""moto as EC2, with a real emulated host behind every launched instance.

``EmulatedEC2(lab)`` starts an in-process ``ThreadedMotoServer`` on
127.0.0.1 (random port) and hooks moto's
``InstanceBackend.run_instances`` / ``terminate_instances``:

* every instance launched through *this* server whose private IP lies in the
  lab subnet gets an emulated host (``Lab.add_host``) before the API call
  returns, with the instance key pair's public key as authorized key (as EC2
  does).  User data is never executed.
* every terminated instance's host is removed.

The hooks only act for requests served by this emulator's server (a WSGI
wrapper marks the request thread), so ``moto.mock_aws`` unit tests running
in the same process never spawn hosts.

Instances launched outside the lab subnet (e.g. without an explicit subnet:
moto then hands out random IPs) get no host and are listed in ``skipped``.
Hosts are never created for, and tests must never connect to, such IPs.

Quirks: ``quirks`` (see quirks.py) makes the cloud behave as AWS documents rather than as
moto does (eventual consistency, security groups held after termination, reused IPs,
sshd answering seconds after the launch: on by default; per-zone capacity and account
policy such as quotas, an SCP or spot limits: off until a test sets them), restored by
``reset()``; ``quirks.off()`` for a test about something else. ``make_subnets(zones)``
puts the default VPC in the lab (one default subnet per zone), for launches without a
subnet_id.

Security groups are enforced (firewall.py): every host's namespace filters what reaches it by
the ingress rules of its instance's groups, re-applied after each launch, termination and
change of rules or groups; ``firewalls.enabled = False`` (until ``reset()``) for a test about
something else.

Session Manager: with ``managed_nodes_file`` set (ssm.py's ``install`` does), the live
instances' hosts (instance id -> netns, ip) are written there after every launch and
termination, for the stand-in ``aws ssm start-session`` (cleared by ``reset()``).

Faults: ``inject(action, code, status=, times=, when=, body=)`` answers
matching calls with an AWS-shaped error (or a raw body, e.g. an HTML 500)
before moto sees them; ``lose_answer(action, how=, times=)`` lets moto serve the call (it
takes effect) and then loses its answer (a reset connection, or a 5xx in its place), so the
client retries what already happened; ``calls`` logs every (service, action, region) the
server received.  ``reset()`` clears them.
"""

from __future__ import annotations

import io
import ipaddress
import json
import re
import socket
import struct
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .firewall import Firewalls
from .host import Host
from .lab import Lab
from .quirks import EMPTY, REPLAYED, SERVER_ERRORS, Place, Quirks

DEFAULT_REGION = "us-east-1"
# A Canonical Ubuntu image moto knows in every region (moto's default AMIs
# only contain old Ubuntu releases; the id just has to resolve).
UBUNTU_AMI = "ami-785db401"
# AWS-managed IAM policies swarm attaches (seeded by `start` and `reset`)
AWS_POLICIES = ("AmazonSSMManagedInstanceCore",)
UBUNTU_SSM_PARAMS = (
    "/aws/service/canonical/ubuntu/server/22.04/stable/current/amd64/hvm/ebs-gp2/ami-id",
    "/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id",
)

# What `lose_answer` puts in place of moto's answer: the connection cut (a reset, as when a
# NAT or proxy drops it), or an HTTP error (5xx) that botocore retries.
RESET = "reset"
# environ key under which `_intercept` leaves the parsed request for `_serve`
_REQUEST = "swarm.emulator.request"

HostOptions = Callable[[str, int], "dict[str, Any] | None"]

# ---------------------------------------------------------------------------
# process-wide hook (reference counted; one per process is enough)

_local = threading.local()
_hook_lock = threading.Lock()
_hook_users = 0
_originals: dict[str, Any] = {}


_unmarked: list["EmulatedEC2"] = []  # servers we could not mark (other moto)


def launch_max_count(monkeypatch: Any) -> None:
    """In-process moto (`mock_aws`) launches MinCount instances whatever MaxCount says; AWS
    launches MaxCount when it can (RunInstances). The emulator rewrites the request it
    forwards to moto; in-process, moto is told to read MaxCount instead."""
    from moto.ec2.responses.instances import InstanceResponse

    read = InstanceResponse._get_param

    def _get_param(self: Any, name: str, if_none: Any = None) -> Any:
        if name == "MinCount":
            most = read(self, "MaxCount")
            if most is not None:
                return most
        return read(self, name, if_none)

    monkeypatch.setattr(InstanceResponse, "_get_param", _get_param)


def _current_emulator() -> "EmulatedEC2 | None":
    emulator = getattr(_local, "emulator", None)
    if emulator is None and _unmarked:
        return _unmarked[-1]
    return emulator


def _install_hooks() -> None:
    global _hook_users
    from moto.ec2.models.instance_types import InstanceTypeOfferingBackend
    from moto.iam.models import IAMBackend
    from moto.ec2.models.instances import InstanceBackend
    from moto.ec2.models.key_pairs import KeyPairBackend
    from moto.ec2.models.security_groups import SecurityGroupBackend

    with _hook_lock:
        _hook_users += 1
        if _hook_users > 1:
            return
        # What quirks need to know of moto's own results: the ids it created.
        for cls, name, record in (
                (SecurityGroupBackend, "create_security_group", lambda q, r: q.created_group(r.id)),
                (KeyPairBackend, "create_key_pair", lambda q, r: q.created_key(r.key_name)),
                (KeyPairBackend, "import_key_pair", lambda q, r: q.created_key(r.key_name)),
                (IAMBackend, "create_instance_profile", lambda q, r: q.created_profile(r.name))):
            _originals[name] = (cls, getattr(cls, name))
            setattr(cls, name, _recording(getattr(cls, name), record))
        # What changes who may reach an instance: its security groups are then re-applied.
        for cls, name in ((SecurityGroupBackend, "authorize_security_group_ingress"),
                          (SecurityGroupBackend, "revoke_security_group_ingress"),
                          (SecurityGroupBackend, "modify_security_group_rules"),
                          (InstanceBackend, "modify_instance_security_groups")):
            _originals[name] = (cls, getattr(cls, name))
            setattr(cls, name, _resyncing(getattr(cls, name)))
        orig_offerings = InstanceTypeOfferingBackend.describe_instance_type_offerings
        _originals["describe_instance_type_offerings"] = (InstanceTypeOfferingBackend,
                                                          orig_offerings)

        def describe_instance_type_offerings(self, location_type=None, filters=None):
            found = orig_offerings(self, location_type, filters)
            emulator = _current_emulator()
            if emulator is None or location_type != "availability-zone":
                return found
            return [o for o in found
                    if emulator.quirks.offered(o.get("Location"), o.get("InstanceType"))]

        describe_instance_type_offerings.__wrapped__ = orig_offerings  # type: ignore[attr-defined]
        InstanceTypeOfferingBackend.describe_instance_type_offerings = (
            describe_instance_type_offerings)
        orig_run = InstanceBackend.run_instances
        orig_terminate = InstanceBackend.terminate_instances
        _originals["run_instances"] = orig_run
        _originals["terminate_instances"] = orig_terminate

        def run_instances(self, *args, **kwargs):
            reservation = orig_run(self, *args, **kwargs)
            emulator = _current_emulator()
            if emulator is not None:
                emulator.quirks.launched([i.id for i in reservation.instances])
                emulator._on_launch(self, reservation.instances)
            return reservation

        def terminate_instances(self, *args, **kwargs):
            result = orig_terminate(self, *args, **kwargs)
            emulator = _current_emulator()
            if emulator is not None:
                emulator.quirks.terminated()
                if emulator.quirks.reuse_ips:
                    for instance, _ in result:
                        _free_ip(self, instance)
                emulator._on_terminate([instance.id for instance, _ in result])
            return result

        run_instances.__wrapped__ = orig_run  # type: ignore[attr-defined]
        terminate_instances.__wrapped__ = orig_terminate  # type: ignore[attr-defined]
        InstanceBackend.run_instances = run_instances
        InstanceBackend.terminate_instances = terminate_instances


def _remove_hooks() -> None:
    global _hook_users
    from moto.ec2.models.instances import InstanceBackend

    with _hook_lock:
        if _hook_users == 0:
            return
        _hook_users -= 1
        if _hook_users == 0:
            InstanceBackend.run_instances = _originals.pop("run_instances")
            InstanceBackend.terminate_instances = _originals.pop("terminate_instances")
            for name in ("create_security_group", "create_key_pair", "import_key_pair",
                         "create_instance_profile",
                         "describe_instance_type_offerings", "authorize_security_group_ingress",
                         "revoke_security_group_ingress", "modify_security_group_rules",
                         "modify_instance_security_groups"):
                cls, orig = _originals.pop(name)
                setattr(cls, name, orig)


def _free_ip(backend: Any, instance: Any) -> None:
    """Give the instance's private IP back to its subnet now (quirks.reuse_ips)."""
    subnet_id, ip = getattr(instance, "subnet_id", None), getattr(instance, "private_ip", None)
    if subnet_id and ip:
        backend.get_subnet(subnet_id).del_subnet_ip(ip)
        # moto frees them again when it collects the instance: by then the IP may be a live
        # instance's, which that would release too.
        instance._private_ips = set()


def _live_instances(region: str) -> list[tuple[str, bool]]:
    """(instance type, spot?) of the pending and running instances moto holds in `region`."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ec2.models import ec2_backends

    backend = ec2_backends[DEFAULT_ACCOUNT_ID][region or DEFAULT_REGION]
    for _ in range(5):   # moto serves other calls in other threads: take a snapshot
        try:
            return [(i.instance_type, i.lifecycle == "spot") for i in backend.all_instances()
                    if i.state in ("pending", "running")]
        except RuntimeError:
            time.sleep(0.01)
    raise RuntimeError("moto's instances kept changing while the quirks counted them")


def _recording(orig: Callable, record: Callable) -> Callable:
    """moto's method, then `record(emulator.quirks, result)` for calls through an emulator."""
    def method(self, *args, **kwargs):
        result = orig(self, *args, **kwargs)
        emulator = _current_emulator()
        if emulator is not None:
            record(emulator.quirks, result)
        return result

    method.__wrapped__ = orig  # type: ignore[attr-defined]
    return method


def _resyncing(orig: Callable) -> Callable:
    """moto's method, then the emulator's hosts' firewalls brought up to date."""
    def method(self, *args, **kwargs):
        result = orig(self, *args, **kwargs)
        emulator = _current_emulator()
        if emulator is not None:
            emulator._sync_firewalls()
        return result

    method.__wrapped__ = orig  # type: ignore[attr-defined]
    return method


def _make_server(emulator: "EmulatedEC2", ip: str, port: int):
    """A ThreadedMotoServer whose WSGI app marks the serving thread with the
    emulator, so the hooks know the call came through this endpoint."""
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer

    try:
        from moto.moto_server.werkzeug_app import (DomainDispatcherApplication,
                                                   MotoRequestHandler, create_backend_app)
        from werkzeug.serving import make_server
    except ImportError:  # pragma: no cover - other moto layout
        # Cannot mark request threads: hooks then act on every call while
        # this emulator runs (in-process mock_aws launches included).
        print("EmulatedEC2: moto internals changed; hooks are not scoped to the "
              "emulator's server", file=sys.stderr)
        _unmarked.append(emulator)
        return ThreadedMotoServer(ip_address=ip, port=port, verbose=False)

    class _Server(ThreadedMotoServer):
        def _server_entry(self) -> None:  # mirrors moto's, plus the marker
            app = DomainDispatcherApplication(create_backend_app)

            def marked_app(environ, start_response):
                _local.emulator = emulator
                try:
                    fault = emulator._intercept(environ)
                    if fault is not None:
                        status, headers, body = fault
                        start_response(status, headers)
                        return [body]
                    return emulator._serve(app, environ, start_response)
                finally:
                    _local.emulator = None

            self._server = make_server(self._ip_address, self._port, marked_app, True,
                                       request_handler=MotoRequestHandler)
            self._server_ready_event.set()
            self._server.serve_forever()

    return _Server(ip_address=ip, port=port, verbose=False)


_SCOPE_RE = re.compile(r"Credential=[^/]+/\d+/([^/]+)/([^/]+)/")


@dataclass
class Injection:
    """One fault: answer matching calls with an AWS-shaped error (or ``body``)
    instead of letting moto serve them.  ``times=None`` = every matching call."""
    action: str
    code: str | None = "InternalError"       # None: no error, only ``delay`` then moto answers
    status: int = 500
    message: str = ""
    times: int | None = 1
    when: Callable[[dict[str, str]], bool] | None = None
    body: bytes | None = None                 # raw answer (e.g. an HTML error page)
    content_type: str = "text/html; charset=utf-8"
    delay: float = 0.0                        # seconds to hold the call first (not under a lock)
    applied: bool = False                     # moto serves the call first (`lose_answer`)
    hits: int = 0                             # how many calls it answered
    params_seen: list[dict[str, str]] = field(default_factory=list)

    def matches(self, action: str, params: dict[str, str]) -> bool:
        if self.action not in ("*", action):
            return False
        if self.times is not None and self.hits >= self.times:
            return False
        return self.when is None or bool(self.when(params))

    def answer(self, json_protocol: bool) -> tuple[str, list[tuple[str, str]], bytes]:
        reason = {400: "Bad Request", 500: "Internal Server Error",
                  503: "Service Unavailable"}.get(self.status, "Error")
        status = f"{self.status} {reason}"
        if self.body is not None:
            return status, [("Content-Type", self.content_type)], self.body
        msg = self.message or f"injected {self.code}"
        if json_protocol:
            body = json.dumps({"__type": self.code, "message": msg}).encode()
            return status, [("Content-Type", "application/x-amz-json-1.1")], body
        body = ('<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
                f"<Code>{self.code}</Code><Message>{msg}</Message></Error></Errors>"
                f"<RequestID>{uuid.uuid4()}</RequestID></Response>").encode()
        return status, [("Content-Type", "text/xml")], body


def _answer_of(app: Callable, environ: dict) -> tuple[str, list[tuple[str, str]], bytes]:
    """The whole answer of a WSGI app: (status, headers, body)."""
    got: dict[str, Any] = {}
    chunks: list[bytes] = []

    def start_response(status, headers, exc_info=None):
        got["status"], got["headers"] = status, list(headers)
        return chunks.append

    result = app(environ, start_response)
    try:
        chunks.extend(result)
    finally:
        getattr(result, "close", lambda: None)()
    return got["status"], got["headers"], b"".join(chunks)


def _reset(sock: socket.socket | None) -> None:
    """Cut the client's connection with no answer (shut down both ways; SO_LINGER 0 so the
    final close is a reset): what the client sees of a connection dropped on the way. The
    ConnectionResetError raised after it makes werkzeug take the request as dropped."""
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _empty_answer(action: str) -> tuple[str, list[tuple[str, str]], bytes]:
    """A successful EC2 answer that found nothing (DescribeInstances: no reservations)."""
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<{action}Response '
            'xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
            f"<requestId>{uuid.uuid4()}</requestId><reservationSet/></{action}Response>")
    return "200 OK", [("Content-Type", "text/xml")], body.encode()


def public_key_of(key_pair: Any) -> str:
    """OpenSSH public key line of a moto KeyPair (created or imported)."""
    material_public = getattr(key_pair, "material_public", b"") or b""
    if isinstance(material_public, bytes):
        material_public = material_public.decode()
    if material_public.strip():
        return material_public.strip()
    material = getattr(key_pair, "material", b"") or b""
    if isinstance(material, str):
        material = material.encode()
    if not material.strip():
        return ""
    from cryptography.hazmat.primitives import serialization

    private = serialization.load_pem_private_key(material, password=None)
    return private.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


class EmulatedEC2:
    """moto EC2 endpoint whose instances are emulated SSH hosts in ``lab``.

    ``host_options(ip, index) -> dict | None`` (index = launch order since
    the last reset, from 0) may return extra ``Lab.add_host`` kwargs, e.g.
    ``{"dead": "silent"}``; ``make_dead(ip, mode)`` does the same for one IP.
    ``{"public_bridge": bridge}`` (``Lab.add_bridge``): the host also owns the instance's
    moto public IP, on that bridge (a bastion: launch it with a public IP).
    """

    def __init__(self, lab: Lab, *, region: str = DEFAULT_REGION,
                 host_options: HostOptions | None = None,
                 ready_timeout: float = 10.0):
        self.lab = lab
        self.region = region
        self.host_options = host_options
        self._default_host_options = host_options
        self.ready_timeout = ready_timeout
        self.dead_ips: dict[str, str] = {}
        self.skipped: list[tuple[str, str | None]] = []  # (instance id, ip): no host
        self.errors: list[str] = []
        self.user_data_seen: dict[str, bool] = {}
        self.injections: list[Injection] = []
        self.calls: list[tuple[str, str, str]] = []   # (service, action, region) served
        self.quirks = Quirks()
        self.firewalls = Firewalls()     # security groups enforced (firewall.py); .enabled
        self._hosts: dict[str, Host] = {}
        self._launched = 0
        self._lock = threading.RLock()
        self._server = None
        self._hooked = False
        self._ssm_seeded: tuple[str, tuple[str, ...]] | None = None
        self.endpoint_url = ""
        # SSM's managed nodes (instance id -> [netns, ip]), kept for the Session Manager
        # stand-ins (ssm.py) when set; None: not written.
        self.managed_nodes_file: Path | None = None

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> "EmulatedEC2":
        if self._server is not None:
            return self
        _install_hooks()
        self._hooked = True
        try:
            self._server = _make_server(self, "127.0.0.1", 0)
            self._server.start()
            host, port = self._server.get_host_and_port()
            self.endpoint_url = f"http://{host}:{port}"
            self.seed_aws_policies()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop the server, remove our hosts, unhook.  Idempotent."""
        server, self._server = self._server, None
        if server is not None:
            try:
                server.stop()
            except Exception as exc:  # noqa: BLE001
                print(f"EmulatedEC2: stopping moto failed: {exc}", file=sys.stderr)
        self._remove_all_hosts()
        if self in _unmarked:
            _unmarked.remove(self)
        if self._hooked:
            self._hooked = False
            _remove_hooks()

    def __enter__(self) -> "EmulatedEC2":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- environment for clients ---------------------------------------------

    def env(self) -> dict[str, str]:
        """Environment variables pointing an AWS SDK/CLI at this emulator."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_EC2_METADATA_DISABLED": "true",
            # never read the developer's real AWS config / credentials
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        }

    def subprocess_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """``base`` (default os.environ) + ``env()``, minus AWS profile and
        session variables that would point elsewhere."""
        import os

        merged = dict(os.environ if base is None else base)
        for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN",
                    "AWS_SECURITY_TOKEN", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"):
            merged.pop(var, None)
        merged.update(self.env())
        return merged

    def client(self, service: str = "ec2", region: str | None = None):
        import boto3

        return boto3.client(service, region_name=region or self.region,
                            endpoint_url=self.endpoint_url,
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    # -- state -----------------------------------------------------------------

    def reset(self) -> None:
        """Reset every moto backend and remove all hosts of this emulator;
        re-seeds the SSM parameters if they had been seeded."""
        if self._server is not None:
            req = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset",
                                         data=b"", method="POST")
            with urllib.request.urlopen(req, timeout=30) as resp:
                resp.read()
        self._remove_all_hosts()
        with self._lock:
            self._launched = 0
            self.dead_ips.clear()
            self.skipped.clear()
            self.errors.clear()
            self.user_data_seen.clear()
            self.injections.clear()
            self.calls.clear()
            self.quirks = Quirks()
            self.host_options = self._default_host_options
            self.managed_nodes_file = None
        self.seed_aws_policies()
        if self._ssm_seeded is not None:
            ami, regions = self._ssm_seeded
            self.seed_ssm_ubuntu_params(ami, regions)

    def make_subnet(self, az: str | None = None) -> str:
        """VPC (the /16 around the lab subnet) + subnet = the lab subnet;
        instances launched in it get .4, .5, ... of the lab subnet."""
        ec2 = self.client("ec2")
        subnet = self.lab.subnet
        vpc_cidr = subnet.supernet(new_prefix=16) if subnet.prefixlen > 16 else subnet
        vpc_id = ec2.create_vpc(CidrBlock=str(vpc_cidr))["Vpc"]["VpcId"]
        return ec2.create_subnet(VpcId=vpc_id, CidrBlock=str(subnet),
                                 AvailabilityZone=az or f"{self.region}a")["Subnet"]["SubnetId"]

    def make_subnets(self, zones: tuple[str, ...] = ("a", "b")) -> dict[str, str]:
        """A default VPC in the lab: the /16 around the lab subnet, made the region's default
        VPC (moto's own loses the flag), with one default subnet per zone, the lab subnet
        split between them (/25s for two zones), so instances in any of them get hosts.
        `zones`: suffixes of the region ("a" -> us-east-1a). -> zone -> subnet id."""
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.ec2.models import ec2_backends

        ec2 = self.client("ec2")
        subnet = self.lab.subnet
        vpc_cidr = subnet.supernet(new_prefix=16) if subnet.prefixlen > 16 else subnet
        vpc_id = ec2.create_vpc(CidrBlock=str(vpc_cidr))["Vpc"]["VpcId"]
        bits = max(1, (len(zones) - 1).bit_length())
        made: dict[str, str] = {}
        for suffix, cidr in zip(zones, subnet.subnets(prefixlen_diff=bits)):
            zone = f"{self.region}{suffix}"
            made[zone] = ec2.create_subnet(VpcId=vpc_id, CidrBlock=str(cidr),
                                           AvailabilityZone=zone)["Subnet"]["SubnetId"]
        backend = ec2_backends[DEFAULT_ACCOUNT_ID][self.region]
        for vpc in backend.vpcs.values():
            vpc.is_default = vpc.id == vpc_id
        for per_zone in backend.subnets.values():
            for sub in per_zone.values():
                sub.default_for_az = sub.id in made.values()
        return made

    def make_dead(self, ip: str, mode: str | bool = "silent") -> None:
        """The instance that will get ``ip`` gets a dead host (see
        ``Lab.add_host``: silent / refuse / blackhole)."""
        self.dead_ips[ip] = "silent" if mode is True else str(mode)

    def host_for(self, instance_id: str) -> Host:
        with self._lock:
            try:
                return self._hosts[instance_id]
            except KeyError:
                raise KeyError(f"no emulated host for {instance_id}") from None

    def write_managed_nodes(self) -> None:
        """The live instances' hosts, as SSM knows its managed nodes (atomically replaced)."""
        path = self.managed_nodes_file
        if path is None:
            return
        with self._lock:
            nodes = {iid: [h.netns, h.ip] for iid, h in self._hosts.items()}
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(nodes))
        tmp.replace(path)

    @property
    def hosts(self) -> dict[str, Host]:
        """instance id -> Host (live ones)."""
        with self._lock:
            return dict(self._hosts)

    def seed_aws_policies(self, names: tuple[str, ...] = AWS_POLICIES) -> None:
        """AWS-managed IAM policies, in every account on AWS: moto loads its copy of all of
        them only when asked to (slow), so just these, from that copy."""
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.iam.aws_managed_policies import aws_managed_policies_data
        from moto.iam.models import AWSManagedPolicy, iam_backends

        data = json.loads(aws_managed_policies_data)
        backend = iam_backends[DEFAULT_ACCOUNT_ID]["aws"]
        for name in names:
            policy = AWSManagedPolicy.from_data(name, DEFAULT_ACCOUNT_ID, backend.region_name,
                                                data[name])
            backend.managed_policies.setdefault(policy.arn, policy)

    def seed_ssm_ubuntu_params(self, ami_id: str = UBUNTU_AMI,
                               regions: tuple[str, ...] | list[str] | None = None) -> None:
        """Write the Canonical Ubuntu AMI parameters (absent from moto and
        refused by put_parameter under /aws/) straight into the SSM backend."""
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.core.utils import utcnow
        from moto.ssm.models import Parameter, ssm_backends

        regions = tuple(regions or (self.region,))
        for region in regions:
            backend = ssm_backends[DEFAULT_ACCOUNT_ID][region]
            for name in UBUNTU_SSM_PARAMS:
                versions = backend._parameters[name]
                versions.clear()
                versions.append(Parameter(
                    account_id=DEFAULT_ACCOUNT_ID, name=name, value=ami_id,
                    parameter_type="String", description=None, allowed_pattern=None,
                    keyid=None, last_modified_date=utcnow(), version=1,
                    data_type="aws:ec2:image"))
        self._ssm_seeded = (ami_id, regions)

    # -- fault injection ---------------------------------------------------------

    def inject(self, action: str, code: str | None = "InternalError", *, status: int = 500,
               message: str = "", times: int | None = 1,
               when: Callable[[dict[str, str]], bool] | None = None,
               body: bytes | None = None, delay: float = 0.0) -> Injection:
        """Answer the next ``times`` calls of ``action`` ("RunInstances",
        "GetParameter", "*" for any) for which ``when(params)`` holds with an
        AWS error ``code`` and HTTP ``status`` (or the raw ``body``), without
        reaching moto; with ``code=None`` the call is only held ``delay``
        seconds and then served by moto (a slow API).  ``params`` are the
        request's flattened query parameters
        (``{"InstanceMarketOptions.MarketType": "spot", ...}``) or, for JSON
        APIs, the top-level keys of the body.  ``reset()`` clears every
        injection."""
        if _unmarked and self in _unmarked:
            raise RuntimeError("fault injection needs the marked moto server")
        inj = Injection(action=action, code=code, status=status, message=message, times=times,
                        when=when, body=body, delay=delay)
        with self._lock:
            self.injections.append(inj)
        return inj

    def lose_answer(self, action: str, how: str | int = RESET, *, times: int | None = 1,
                    when: Callable[[dict[str, str]], bool] | None = None) -> Injection:
        """The next ``times`` calls of ``action`` (where ``when(params)`` holds) are served by
        moto, so they take effect, and their answer is lost on the way back: ``how`` =
        RESET cuts the connection, an HTTP status (500, 503) answers InternalError /
        ServiceUnavailable instead. As on EC2 ("Ensuring idempotency in Amazon EC2 API
        requests": a request may time out or meet a server error although it completed),
        the client cannot tell it from a call that did nothing."""
        if _unmarked and self in _unmarked:
            raise RuntimeError("fault injection needs the marked moto server")
        code = RESET if how == RESET else ("ServiceUnavailable" if how == 503 else "InternalError")
        inj = Injection(action=action, code=code, status=500 if how == RESET else int(how),
                        message="We encountered an internal error. Please try again.",
                        times=times, when=when, applied=True)
        with self._lock:
            self.injections.append(inj)
        return inj

    def clear_injections(self) -> None:
        with self._lock:
            self.injections.clear()

    def call_count(self, action: str, region: str | None = None) -> int:
        """How many ``action`` calls this server received (answered or injected)."""
        with self._lock:
            return sum(1 for _, a, r in self.calls if a == action and region in (None, r))

    def _intercept(self, environ: dict) -> tuple[str, list[tuple[str, str]], bytes] | None:
        """Called for every request: log it; return an answer if a fault matches."""
        if environ.get("PATH_INFO", "").startswith("/moto-api"):
            return None
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        body = environ["wsgi.input"].read(length) if length > 0 else b""
        environ["wsgi.input"] = io.BytesIO(body)   # moto reads it again
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        params: dict[str, str] = {}
        if target:
            action = target.rsplit(".", 1)[-1]
            try:
                data = json.loads(body or b"{}")
                params = {k: v if isinstance(v, str) else json.dumps(v) for k, v in data.items()}
            except (ValueError, AttributeError):
                params = {}
        else:
            query = environ.get("QUERY_STRING", "") + "&" + body.decode("utf-8", "replace")
            params = {k: v[0] for k, v in urllib.parse.parse_qs(query).items()}
            action = params.get("Action", "")
        scope = _SCOPE_RE.search(environ.get("HTTP_AUTHORIZATION", ""))
        region, service = (scope.group(1), scope.group(2)) if scope else ("", "")
        chosen = None
        with self._lock:
            self.calls.append((service, action, region))
            quirk = (self.quirks.answer(action, params, region, lambda: _live_instances(region),
                                        self._place(region))
                     if service in ("ec2", "") else None)
            if quirk is not None:
                if quirk[0] == EMPTY:
                    return _empty_answer(action)
                status = (403 if quirk[0] == "UnauthorizedOperation"
                          else 500 if quirk[0] in SERVER_ERRORS else 400)
                return Injection(action, code=quirk[0], status=status,
                                 message=quirk[1]).answer(bool(target))
            environ[_REQUEST] = (action, params, region, bool(target))
            for inj in self.injections:
                if not inj.applied and inj.matches(action, params):
                    inj.hits += 1
                    inj.params_seen.append(params)
                    chosen = inj
                    break
        if (chosen is None or (chosen.code is None and chosen.body is None)) and \
                action == "RunInstances" and not target:
            self._grant(environ, params, region, body)
        if chosen is None:
            return None
        if chosen.delay:
            time.sleep(chosen.delay)
        return None if chosen.code is None and chosen.body is None else chosen.answer(bool(target))

    def _grant(self, environ: dict, params: dict[str, str], region: str, body: bytes) -> None:
        """The instances AWS would launch (MaxCount, or fewer: quirks.capacity) as the
        MinCount moto launches (it ignores MaxCount); the query is in the body."""
        grant = self.quirks.granted(params, region, self._place(region))
        if str(grant) == params.get("MinCount", "1"):
            return
        pairs = [(k, str(grant) if k == "MinCount" else v)
                 for k, v in urllib.parse.parse_qsl(body.decode(), keep_blank_values=True)]
        new = urllib.parse.urlencode(pairs).encode()
        environ["wsgi.input"], environ["CONTENT_LENGTH"] = io.BytesIO(new), str(len(new))

    def _serve(self, app: Callable, environ: dict, start_response: Callable) -> Any:
        """moto's answer, unless the launch repeats a ClientToken (quirks.idempotent_launch:
        the first launch's answer, or IdempotentParameterMismatch) or the answer is lost
        (lose_answer)."""
        action, params, region, json_protocol = environ.get(_REQUEST, ("", {}, "", False))
        region = region or self.region
        replay = self.quirks.replay(action, params, region)
        if replay is not None and replay[0] != REPLAYED:
            status, headers, body = Injection(action, code=replay[0], status=400,
                                              message=replay[1]).answer(json_protocol)
        elif replay is not None:
            status, headers, body = replay[1]
        else:
            with self._lock:
                losing = any(i.applied for i in self.injections)
            if not losing and not (action == "RunInstances" and params.get("ClientToken")):
                return app(environ, start_response)    # nothing to keep or lose: stream it
            status, headers, body = _answer_of(app, environ)
            if action == "RunInstances" and status.startswith("200"):
                self.quirks.launched_with_token(region, params, (status, headers, body))
        with self._lock:
            lost = next((i for i in self.injections
                         if i.applied and i.matches(action, params)), None)
            if lost is not None:
                lost.hits += 1
                lost.params_seen.append(params)
        if lost is None:
            start_response(status, headers)
            return [body]
        if lost.code == RESET:
            _reset(environ.get("werkzeug.socket"))
            raise ConnectionResetError("lose_answer: the connection was reset")
        status, headers, body = lost.answer(json_protocol)
        start_response(status, headers)
        return [body]

    def _place(self, region: str) -> Place:
        """Subnet zones and offered zones as moto's backend of `region` knows them."""
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.ec2.models import ec2_backends
        from moto.ec2.models.instance_types import INSTANCE_TYPE_OFFERINGS

        region = region or self.region

        def zone_of(subnet_id: str) -> str | None:
            try:
                return ec2_backends[DEFAULT_ACCOUNT_ID][region].get_subnet(
                    subnet_id).availability_zone
            except Exception:  # noqa: BLE001 - moto answers InvalidSubnetID itself
                return None

        def offered(itype: str) -> list[str]:
            return sorted(o["Location"]
                          for o in INSTANCE_TYPE_OFFERINGS["availability-zone"].get(region, [])
                          if o.get("InstanceType") == itype)

        return Place(zone_of, offered)

    # -- hooks -----------------------------------------------------------------

    def _on_launch(self, backend: Any, instances: list[Any]) -> None:
        specs = []
        ids = []
        for instance in instances:
            ip = instance.private_ip
            with self._lock:
                index = self._launched
                self._launched += 1
                self.user_data_seen[instance.id] = bool(getattr(instance, "user_data", None))
            if not ip or ipaddress.ip_address(ip) not in self.lab.subnet:
                self.skipped.append((instance.id, ip))
                continue
            key = ""
            if instance.key_name:
                key_pair = getattr(backend, "key_pairs", {}).get(instance.key_name)
                if key_pair is not None:
                    key = public_key_of(key_pair)
            spec: dict[str, Any] = {"ip": ip, "authorized_key": key}
            if self.host_options is not None:
                spec.update(self.host_options(ip, index) or {})
            if spec.get("public_bridge") is not None and "public_ip" not in spec:
                # moto's public IP is owned by the host, so it may be connected to
                if not instance.public_ip:
                    self.errors.append(f"{instance.id} has no public IP for its public_bridge")
                    continue
                spec["public_ip"] = instance.public_ip
            if ip in self.dead_ips:
                spec["dead"] = self.dead_ips[ip]
            if self.quirks.sshd_late_s and not spec.get("dead"):
                spec.setdefault("sshd_delay", self.quirks.sshd_late_s)
            spec.setdefault("firewall", self.firewalls.initial(instance, backend))
            specs.append(spec)
            ids.append(instance.id)
        if not specs:
            return
        try:
            hosts = self.lab.add_hosts(specs, timeout=self.ready_timeout)
        except Exception as exc:  # noqa: BLE001
            # Raising would make moto answer 500 and botocore retry (=launch
            # again); record it instead -- the ec2_env fixture fails the test.
            msg = f"emulated hosts for {ids} failed: {exc}"
            self.errors.append(msg)
            print(f"EmulatedEC2: {msg}", file=sys.stderr)
            return
        with self._lock:
            for instance_id, host, spec in zip(ids, hosts, specs):
                self._hosts[instance_id] = host
                if host.firewalled:
                    self.firewalls.track(instance_id, host, backend, spec["firewall"])
        self._sync_firewalls()    # the others' rules naming these instances' groups
        self.write_managed_nodes()

    def _on_terminate(self, instance_ids: list[str]) -> None:
        for instance_id in instance_ids:
            with self._lock:
                host = self._hosts.pop(instance_id, None)
            self.firewalls.forget(instance_id)
            if host is not None:
                try:
                    host.remove()
                except Exception as exc:  # noqa: BLE001
                    self.errors.append(f"removing host of {instance_id}: {exc}")
        self._sync_firewalls()
        self.write_managed_nodes()

    def _sync_firewalls(self) -> None:
        for error in self.firewalls.sync():
            self.errors.append(error)
            print(f"EmulatedEC2: {error}", file=sys.stderr)

    def _remove_all_hosts(self) -> None:
        self.firewalls.clear()
        with self._lock:
            hosts, self._hosts = list(self._hosts.values()), {}
        for host in hosts:
            try:
                host.remove()
            except Exception as exc:  # noqa: BLE001
                self.errors.append(f"removing {host.name}: {exc}")

