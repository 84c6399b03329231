"""Core's reconciling and failure handling on the real EC2 provider (in-process moto)."""
import pytest
from botocore.exceptions import WaiterError

from swarm import core
from swarm.errors import ProviderError
from tests.test_ec2_provider import (  # noqa: F401  (fixtures)
    LIVE, aws, checkip_calls, images, instances, loopback_only, make, shared_botocore_loader, subnet)


def session(subnet_id, tmp_path):
    provider, stack = make(subnet_id)
    # The provider never bootstraps here: these tests stop before SSH, by design.
    (tmp_path / "bootstrap").mkdir(exist_ok=True)
    (tmp_path / "bootstrap" / "bootstrap.sh").write_text("true\n")
    from dataclasses import replace
    cfg = replace(stack.config, base_dir=tmp_path)
    stack = replace(stack, config=cfg)
    provider.config = cfg
    return core.Session(stack, provider)


def test_a_failure_while_waiting_terminates_everything_that_call_launched(aws, subnet, tmp_path):
    sess = session(subnet, tmp_path)

    launched = []

    def mark(**kw):
        launched.append(True)

    def waiter_breaks(**kw):
        # Only the first wait after the launch breaks, so the clean-up can still look.
        if len(launched) == 1:
            launched.append(True)
            raise WaiterError(name="InstanceRunning", reason="injected", last_response={})

    events = sess.provider.ec2.meta.events
    events.register("after-call.ec2.RunInstances", mark)
    events.register("before-call.ec2.DescribeInstances", waiter_breaks)
    with pytest.raises(ProviderError, match="did not reach 'running'"):
        core.up_master(sess)
    assert instances(aws, "alpha", LIVE) == []
    assert len(instances(aws, "alpha", ["terminated", "shutting-down"])) == 1


def test_scaling_down_terminates_the_newest_workers(aws, subnet, tmp_path, monkeypatch):
    sess = session(subnet, tmp_path)
    monkeypatch.setattr(core, "bootstrap", lambda sess, nodes: [])   # no SSH in this test
    core.up_master(sess)
    first = core.scale_workers(sess, 2).created
    later = core.scale_workers(sess, 5).created
    assert len(instances(aws, "alpha", LIVE)) == 6
    result = core.scale_workers(sess, 2)
    assert sorted(n.id for n in result.removed) == sorted(n.id for n in later)
    assert sorted(n.id for n in sess.nodes("worker")) == sorted(n.id for n in first)
    assert len(instances(aws, "alpha", LIVE)) == 3
    assert core.scale_workers(sess, 2).nothing_to_do
    core.down(sess)
    assert instances(aws, "alpha", LIVE) == []
    assert "nothing to do" in core.down(sess).nothing_to_do     # a second down is a no-op
