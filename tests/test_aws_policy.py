"""The account's policy, as AWS enforces it (tests/emulation/quirks.py): vCPU and spot quotas,
an SCP that requires IMDSv2, the spot service-linked role, and spot capacity with `[ec2] spot`.

Each CLI test runs swarm in a subprocess against the emulated cloud with one quirk switched on,
and asserts what the user sees (one `error:` line with AWS's limit and the next step, exit 1)
and that nothing is left that `swarm down` can't find. The translate() cases at the top are
fast unit tests of the same lines.
"""
from __future__ import annotations

import re

import pytest
from botocore.exceptions import ClientError

from swarm import config
from swarm.config.schema import Spot
from swarm.errors import ProviderError
from swarm.models import Lifecycle
from swarm.providers.ec2 import market, quotas
from swarm.providers.ec2.errors import translate
from tests.emulation.quirks import scp_denial
from tests.helpers import assert_error_line, swarm
from tests.reliability import all_instances, ec2_toml, fast_bootstrap, instances

STACK = "policy"
REGION = "us-east-1"
VCPU_MESSAGE = ("You have requested more vCPU capacity than your current vCPU limit of 32 allows "
                "for the instance bucket that the specified instance type belongs to. Please "
                "visit http://aws.amazon.com/contact-us/ec2-request to request an adjustment to "
                "this limit.")
STANDARD_OD = '"Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances" quota (L-1216C47A)'
STANDARD_SPOT = '"All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests" quota (L-34B43A08)'
SLR_COMMAND = "`aws iam create-service-linked-role --aws-service-name spot.amazonaws.com`"
LAUNCH = "launch 2 c5.large worker node(s) for stack policy"


def client_error(code: str, message: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, "RunInstances")


def line(code: str, message: str, itype: str | None = "c5.large") -> ProviderError:
    err = translate(client_error(code, message), LAUNCH, REGION, itype)
    assert "\n" not in str(err), str(err)
    return err


# ---------------------------------------------------------------- translate(), pure

def test_vcpu_limit_keeps_the_limit_and_names_the_quota_and_its_page():
    err = line("VcpuLimitExceeded", VCPU_MESSAGE)
    text = str(err)
    assert "current vCPU limit of 32 allows" in text            # AWS's own words, the limit
    assert LAUNCH in text and "VcpuLimitExceeded" in text
    assert STANDARD_OD in text and f"for {REGION}" in text
    assert text.endswith(f"https://{REGION}.console.aws.amazon.com/servicequotas/home/services/"
                         "ec2/quotas/L-1216C47A"), text
    assert "contact-us" not in text                              # the old way, replaced
    assert err.code == "VcpuLimitExceeded" and err.action and "L-1216C47A" in err.action


def test_quota_of_another_family_and_of_an_unknown_type():
    g = str(line("InstanceLimitExceeded", "Your quota allows for 0 more running instance(s).",
                 "g5.xlarge"))
    assert '"Running On-Demand G and VT instances" quota (L-DB2E81BA)' in g, g
    hpc = str(line("VcpuLimitExceeded", VCPU_MESSAGE, "hpc6a.48xlarge"))
    assert '"Running On-Demand HPC instances" quota for' in hpc, hpc   # not H: its own bucket
    assert hpc.endswith("/servicequotas/home/services/ec2/quotas"), hpc
    unknown = str(line("VcpuLimitExceeded", VCPU_MESSAGE, None))
    assert "higher on-demand quota of the instance family" in unknown, unknown


@pytest.mark.parametrize("itype, bucket", [
    ("c5.large", "Standard"), ("t4g.nano", "Standard"), ("im4gn.large", "Standard"),
    ("is4gen.xlarge", "Standard"), ("m7i-flex.large", "Standard"), ("z1d.large", "Standard"),
    ("g5.xlarge", "G and VT"), ("vt1.3xlarge", "G and VT"), ("p4d.24xlarge", "P"),
    ("inf2.xlarge", "Inf"), ("dl1.24xlarge", "DL"), ("trn1.2xlarge", "Trn"),
    ("hpc7g.4xlarge", "HPC"), ("x2iedn.xlarge", "X"), ("u-6tb1.metal", "High Memory"),
])
def test_instance_buckets(itype, bucket):
    assert (quotas.bucket(itype) or "").startswith(bucket)


def test_spot_quota_is_its_own_quota_and_offers_on_demand():
    err = line("MaxSpotInstanceCountExceeded", "Max spot instance count exceeded")
    text = str(err)
    assert "(MaxSpotInstanceCountExceeded: Max spot instance count exceeded)" in text, text
    assert STANDARD_SPOT in text and "set [ec2] spot = false" in text, text
    assert text.endswith("/ec2/quotas/L-34B43A08"), text


def test_scp_denial_says_so_and_how_to_decode_it_with_the_whole_message():
    message = scp_denial("ec2:RunInstances", REGION, "instance/*")
    blob = message.rsplit(": ", 1)[1]
    assert len(blob) > 1000 and " " not in blob
    text = str(line("UnauthorizedOperation", message))
    assert text.startswith(f"not allowed to {LAUNCH} in {REGION} (UnauthorizedOperation: User: "
                           "arn:aws:iam::123456789012:user/x is not authorized to perform: "
                           "ec2:RunInstances"), text
    assert "granting permissions does not lift an explicit deny in a service control policy" in text
    assert text.endswith(f"`aws sts decode-authorization-message --encoded-message {blob} "
                         "--query DecodedMessage --output text`"), text[-300:]
    assert text.count(blob) == 1 and "You are not authorized" not in text


def test_a_denial_without_an_explicit_deny_asks_for_the_permission():
    text = str(line("UnauthorizedOperation", "You are not authorized to perform this operation. "
                                             "Encoded authorization failure message: AbC-_12"))
    assert "grant this IAM identity the EC2/SSM permissions swarm needs" in text, text
    assert "explicit deny" not in text
    assert "--encoded-message AbC-_12 " in text


def test_the_spot_service_linked_role_error_gives_the_command():
    text = str(line("AuthFailure.ServiceLinkedRoleCreationNotPermitted",
                    "The provided credentials do not have permission to create the "
                    "service-linked role for EC2 Spot Instances."))
    assert SLR_COMMAND in text and "spot = false" in text, text
    assert "rejected the credentials" not in text               # not a bad key


def test_spot_setting_and_its_markets():
    parse = config.parse
    assert parse("[ec2]\nspot = true\n").ec2.spot is Spot.PREFERRED
    assert parse('[ec2]\nspot = "required"\n').ec2.spot is Spot.REQUIRED
    assert parse("[ec2]\nspot = false\n").ec2.spot is parse("").ec2.spot is Spot.OFF
    markets = {s: [lc for _, lc in market.attempts(s)] for s in Spot}
    assert markets == {Spot.OFF: [Lifecycle.ON_DEMAND],
                       Spot.PREFERRED: [Lifecycle.SPOT, Lifecycle.ON_DEMAND],
                       Spot.REQUIRED: [Lifecycle.SPOT]}


# ---------------------------------------------------------------- the CLI on the emulated cloud

@pytest.fixture
def stack(workdir, cli_env, ec2_env):
    """`stack(ec2_extra)` writes the stack's swarm.toml and returns the CLI's env."""
    def make(ec2_extra: str = "") -> dict[str, str]:
        ec2_toml(workdir, ec2_env.subnet_id, name=STACK, ec2_extra=ec2_extra)
        fast_bootstrap(workdir)
        return {**cli_env, **ec2_env.env}
    return make


def cli(workdir, env, *args: str, timeout: float = 180):
    return swarm(*args, cwd=workdir, env=env, timeout=timeout)


def error_lines(res) -> list[str]:
    return [ln for ln in res.err_lines if ln.startswith("error:")]


def assert_down_leaves_nothing(workdir, env, ec2) -> None:
    res = cli(workdir, env, "down")
    assert res.code == 0, res.err
    assert [i for i in all_instances(ec2) if i["State"]["Name"] != "terminated"] == []
    assert ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [f"swarm-{STACK}"]}])["SecurityGroups"] == []
    assert [k for k in ec2.describe_key_pairs()["KeyPairs"]
            if k["KeyName"] == f"swarm-{STACK}"] == []


def test_vcpu_quota_reached_is_one_line_with_the_limit_and_the_quota(workdir, stack,
                                                                      emulated_ec2):
    """vcpu_limit = 4: the master (2 vCPUs) fits, 2 more workers (4 vCPUs) do not. One error
    line with AWS's limit and the quota to raise; no worker launched; `down` removes all."""
    env = stack()
    emulated_ec2.quirks.vcpu_limit = 4
    assert cli(workdir, env, "up", "master").code == 0
    res = cli(workdir, env, "up", "workers", "-n", "2")
    assert_error_line(res, 1, "VcpuLimitExceeded", "current vCPU limit of 4 allows",
                      STANDARD_OD, "servicequotas/home/services/ec2/quotas/L-1216C47A")
    assert len(error_lines(res)) == 1, res.err
    ec2 = emulated_ec2.client()
    assert ("RunInstances", "VcpuLimitExceeded") in emulated_ec2.quirks.answered
    assert instances(ec2, STACK, "worker") == [] and len(instances(ec2, STACK)) == 1
    assert_down_leaves_nothing(workdir, env, ec2)


def test_an_scp_requiring_imdsv2_lets_every_swarm_launch_through(workdir, stack, emulated_ec2):
    """require_imdsv2 (an organization's SCP): every RunInstances without
    MetadataOptions.HttpTokens=required is denied. `up master` and `up workers` succeed, so
    every launch sent it; the instances have IMDSv2 required."""
    env = stack()
    emulated_ec2.quirks.require_imdsv2 = True
    for args in (("up", "master"), ("up", "workers", "-n", "2")):
        res = cli(workdir, env, *args)
        assert res.code == 0, res.err
    assert ("RunInstances", "UnauthorizedOperation") not in emulated_ec2.quirks.answered
    got = instances(emulated_ec2.client(), STACK)
    assert len(got) == 3
    assert {(i["MetadataOptions"]["HttpTokens"], i["MetadataOptions"]["HttpEndpoint"])
            for i in got} == {("required", "enabled")}
    assert_down_leaves_nothing(workdir, env, emulated_ec2.client())


def test_an_scp_denial_is_one_line_with_the_decode_command(workdir, stack, emulated_ec2):
    """An SCP denies RunInstances (for a reason swarm cannot meet: here, every launch). The
    line says it is an explicit deny in an SCP and gives the decode command with the whole
    encoded message; nothing is launched."""
    env = stack()
    message = scp_denial("ec2:RunInstances", REGION, "instance/*")
    blob = message.rsplit(": ", 1)[1]
    emulated_ec2.inject("RunInstances", "UnauthorizedOperation", status=403, times=None,
                        message=message)
    res = cli(workdir, env, "up", "master")
    assert_error_line(res, 1, "UnauthorizedOperation", "explicit deny in a service control policy",
                      f"aws sts decode-authorization-message --encoded-message {blob} ")
    assert len(error_lines(res)) == 1, res.err
    assert all_instances(emulated_ec2.client()) == []
    assert_down_leaves_nothing(workdir, env, emulated_ec2.client())


def test_spot_quota_reached_is_said_not_paid_around_on_demand(workdir, stack, emulated_ec2):
    """max_spot = 2, spot = true: the master is spot; 2 more spot workers would be 3. The
    quota error is the error (never quietly on-demand): one line naming the spot quota."""
    env = stack("spot = true\n")
    emulated_ec2.quirks.max_spot = 2
    assert cli(workdir, env, "up", "master").code == 0
    res = cli(workdir, env, "up", "workers", "-n", "2")
    assert_error_line(res, 1, "MaxSpotInstanceCountExceeded", "Max spot instance count exceeded",
                      STANDARD_SPOT, "set [ec2] spot = false")
    assert len(error_lines(res)) == 1 and "launching them on-demand" not in res.err, res.err
    ec2 = emulated_ec2.client()
    (master,) = instances(ec2, STACK)
    assert master.get("InstanceLifecycle") == "spot"
    assert_down_leaves_nothing(workdir, env, ec2)


def test_missing_spot_service_linked_role_gives_the_command(workdir, stack, emulated_ec2):
    """spot_role_missing: AWS may not create the Spot service-linked role for these
    credentials. One line with the `aws iam create-service-linked-role` command; no
    on-demand launch instead (it is not capacity); nothing left after `down`."""
    env = stack("spot = true\n")
    emulated_ec2.quirks.spot_role_missing = True
    res = cli(workdir, env, "up", "master")
    assert_error_line(res, 1, "AuthFailure.ServiceLinkedRoleCreationNotPermitted", SLR_COMMAND)
    assert len(error_lines(res)) == 1, res.err
    assert all_instances(emulated_ec2.client()) == []
    assert_down_leaves_nothing(workdir, env, emulated_ec2.client())


def _no_spot_capacity(emulated_ec2):
    return emulated_ec2.inject(
        "RunInstances", "InsufficientInstanceCapacity", status=500, times=None,
        when=lambda p: p.get("InstanceMarketOptions.MarketType") == "spot",
        message="There is no Spot capacity available that matches your request.")


def test_no_spot_capacity_falls_back_on_demand_and_prints_the_estimate_again(
        workdir, stack, emulated_ec2):
    """spot = true, no spot capacity: the master is launched on-demand, said so, and the cost
    estimate printed before the launch (spot) is printed again at on-demand prices."""
    env = stack("spot = true\n")
    inj = _no_spot_capacity(emulated_ec2)
    res = cli(workdir, env, "up", "master")
    assert res.code == 0, res.err
    estimates = [ln for ln in res.err_lines if "estimated cost:" in ln]
    assert len(estimates) == 2, res.err
    assert "(1 master + 0 workers, spot)" in estimates[0], estimates
    assert "(1 master + 0 workers, on-demand)" in estimates[1], estimates
    fallback = next(i for i, ln in enumerate(res.err_lines) if "no spot capacity" in ln)
    assert "InsufficientInstanceCapacity" in res.err_lines[fallback]
    assert res.err_lines.index(estimates[1]) > fallback
    assert inj.hits == 1
    (inst,) = instances(emulated_ec2.client(), STACK)
    assert inst.get("InstanceLifecycle") != "spot"
    assert_down_leaves_nothing(workdir, env, emulated_ec2.client())


def test_spot_required_refuses_to_fall_back(workdir, stack, emulated_ec2):
    """spot = "required", no spot capacity: one line saying so (and how to allow on-demand);
    no on-demand RunInstances at all; nothing left after `down`."""
    env = stack('spot = "required"\n')
    inj = _no_spot_capacity(emulated_ec2)
    res = cli(workdir, env, "up", "master")
    assert_error_line(res, 1, "no spot capacity", "InsufficientInstanceCapacity",
                      '[ec2] spot = "required" rules out on-demand', "set spot = true")
    assert len(error_lines(res)) == 1, res.err
    runs = emulated_ec2.call_count("RunInstances") - emulated_ec2.quirks.count("RunInstances")
    assert inj.hits == 1 and runs == 1, (inj.hits, runs)
    assert all_instances(emulated_ec2.client()) == []
    assert re.search(r"estimated cost: .*\(1 master \+ 0 workers, spot\)", res.err), res.err
    assert_down_leaves_nothing(workdir, env, emulated_ec2.client())
