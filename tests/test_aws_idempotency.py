"""A launch that happened although its answer was lost is not made twice (issue 15, item 6).

EC2 is idempotent by ClientToken (quirks.idempotent_launch, on for every EC2 test) and the
emulator can lose an answer after moto has served the call (EmulatedEC2.lose_answer): the
instances exist, the client sees a cut connection or a 5xx. botocore repeats the call with
the token it sent; when botocore's attempts are used up, swarm asks again itself with the
same token. Instances are counted by their swarm tags in moto in every state, so a
duplicate launch that `up` terminated again would still be counted."""
from __future__ import annotations

import pytest

from swarm import config
from swarm.models import Role
from swarm.providers.base import Stack
from swarm.providers.ec2.provider import Ec2Provider
from tests.emulation.ec2 import RESET, UBUNTU_AMI
from tests.emulation.quirks import REPLAYED
from tests.helpers import swarm
from tests.reliability import ec2_stack, instances

STACK = "once"


@pytest.fixture
def stack_env(workdir, cli_env, ec2_env):
    return ec2_stack(workdir, cli_env, ec2_env, STACK)


def launched(ec2, role: str) -> list[str]:
    """Ids of every instance moto launched for the stack's `role`, live or terminated."""
    return sorted(i["InstanceId"] for i in instances(ec2, STACK, role, live=False))


def test_the_same_client_token_returns_the_first_launch(ec2_env, emulated_ec2):
    """The quirk itself, as the EC2 Developer Guide documents it: the same token and
    parameters get the first reservation again, other parameters IdempotentParameterMismatch,
    and the token means nothing in another region."""
    ec2 = emulated_ec2.client()
    params = dict(ImageId=UBUNTU_AMI, InstanceType="t3.micro", MinCount=2, MaxCount=2,
                  SubnetId=ec2_env.subnet_id, ClientToken="tok-1")
    first = ec2.run_instances(**params)
    again = ec2.run_instances(**params)
    assert again["ReservationId"] == first["ReservationId"]
    assert [i["InstanceId"] for i in again["Instances"]] == [
        i["InstanceId"] for i in first["Instances"]]
    assert len(instances(ec2, live=False)) == 2
    with pytest.raises(ec2.exceptions.ClientError) as err:
        ec2.run_instances(**{**params, "InstanceType": "t3.small"})
    assert err.value.response["Error"]["Code"] == "IdempotentParameterMismatch"
    other = emulated_ec2.client(region="us-west-2").run_instances(
        ImageId=UBUNTU_AMI, InstanceType="t3.micro", MinCount=1, MaxCount=1, ClientToken="tok-1")
    assert other["ReservationId"] != first["ReservationId"]
    assert len(instances(ec2, live=False)) == 2                     # us-east-1 unchanged


@pytest.mark.parametrize("quirk", [True, False], ids=["idempotent", "moto-as-is"])
def test_a_lost_answer_retried_by_botocore(quirk, ec2_env, emulated_ec2):
    """The injection: moto launches, the answer is cut, botocore repeats the call with its
    token. With the quirk: one launch; without it (moto as it is), two: the injection makes a
    client that repeats a launch pay for it, unless EC2 honours the token."""
    emulated_ec2.quirks.idempotent_launch = quirk
    ec2 = emulated_ec2.client()
    lost = emulated_ec2.lose_answer("RunInstances", RESET)
    resp = ec2.run_instances(ImageId=UBUNTU_AMI, InstanceType="t3.micro", MinCount=1,
                             MaxCount=1, SubnetId=ec2_env.subnet_id)
    assert lost.hits == 1
    ids = [i["InstanceId"] for i in instances(ec2, live=False)]
    assert len(ids) == (1 if quirk else 2), ids
    assert resp["Instances"][0]["InstanceId"] in ids


@pytest.mark.parametrize(("how", "attempts"), [(RESET, "botocore"), (500, "botocore"),
                                               (RESET, "swarm"), (503, "swarm")])
def test_up_with_the_launch_answers_lost_launches_once(how, attempts, workdir, stack_env,
                                                       emulated_ec2):
    """`up master` and `up workers -n 3` while every launch's first answer is lost (or, with
    AWS_MAX_ATTEMPTS=1 so botocore does not repeat it, swarm's own retry asks again): exit 0,
    exactly 1 master and 3 workers ever launched, each launch answered the second time from
    its ClientToken."""
    env = stack_env if attempts == "botocore" else {**stack_env, "AWS_MAX_ATTEMPTS": "1"}
    lost = emulated_ec2.lose_answer("RunInstances", how, times=1)
    ec2 = emulated_ec2.client()

    res = swarm("up", "master", cwd=workdir, env=env, timeout=180)
    assert res.code == 0, res.err
    assert len(launched(ec2, "master")) == 1, res.err
    lost.times = 2                              # the workers' first answer is lost too
    res = swarm("up", "workers", "-n", "3", cwd=workdir, env=env, timeout=180)
    assert res.code == 0, res.err
    assert len(launched(ec2, "worker")) == 3, res.err
    assert len(instances(ec2, STACK, "worker")) == 3
    assert lost.hits == 2
    assert emulated_ec2.quirks.count("RunInstances") >= 2
    assert [c for a, c in emulated_ec2.quirks.answered if a == "RunInstances"].count(REPLAYED) == 2
    if attempts == "swarm":
        code = "ConnectionClosedError" if how == RESET else (
            "ServiceUnavailable" if how == 503 else "InternalError")
        assert (f"EC2's answer to the launch was lost ({code}): asking again with the same "
                "ClientToken, which launches nothing twice") in res.err, res.err
    assert "error" not in res.err, res.err
    assert swarm("down", cwd=workdir, env=env, timeout=180).code == 0


@pytest.mark.parametrize("swarm_token", [True, False], ids=["swarm's-token", "no-token"])
def test_without_swarms_token_the_duplicate_launch_is_seen(swarm_token, workdir, stack_env,
                                                           emulated_ec2, monkeypatch):
    """The check above can fail: when botocore gives up (AWS_MAX_ATTEMPTS=1) swarm's retry
    sends a new RunInstances; without swarm's ClientToken botocore fills in a new token for
    it (its idempotencyToken is per call, kept only across its own attempts), so EC2 launches
    again and the count by tags sees 2 masters."""
    for k, v in {**stack_env, "AWS_MAX_ATTEMPTS": "1"}.items():
        if k.startswith("AWS_"):
            monkeypatch.setenv(k, v)
    cfg = config.load(workdir / "swarm.toml")
    provider, stack = Ec2Provider(cfg), Stack.from_config(cfg)
    if not swarm_token:
        client = provider.ec2
        run = client.run_instances
        monkeypatch.setattr(client, "run_instances", lambda **kw: run(
            **{k: v for k, v in kw.items() if k != "ClientToken"}))
    lost = emulated_ec2.lose_answer("RunInstances", RESET)
    nodes = provider.create_nodes(stack, Role.MASTER, 1)
    assert lost.hits == 1 and len(nodes) == 1
    ec2 = emulated_ec2.client()
    assert len(launched(ec2, "master")) == (1 if swarm_token else 2)
    assert swarm("down", cwd=workdir, env=stack_env, timeout=180).code == 0
