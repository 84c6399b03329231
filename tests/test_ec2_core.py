"""Core's reconciling and failure handling on the real EC2 provider (in-process moto)."""
import pytest
from botocore.exceptions import WaiterError

from swarm.pipeline import fleet
from swarm.pipeline.session import Session
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
    return Session(stack, provider)


def test_a_failure_while_waiting_terminates_everything_that_call_launched(aws, subnet, tmp_path):
    sess = session(subnet, tmp_path)

    launched, seen = [], []

    def mark(**kw):
        launched.append(True)

    def still_pending(parsed, **kw):
        # moto's instances run at once: the first look after the launch sees them pending
        if launched and not seen:
            seen.append("pending")
            for r in parsed.get("Reservations", []):
                for i in r["Instances"]:
                    i["State"] = {"Code": 0, "Name": "pending"}

    def waiter_breaks(**kw):
        # Only the wait after that look breaks, so the clean-up can still look.
        if seen == ["pending"]:
            seen.append("broken")
            raise WaiterError(name="InstanceRunning", reason="injected", last_response={})

    events = sess.provider.ec2.meta.events
    events.register("after-call.ec2.RunInstances", mark)
    events.register("after-call.ec2.DescribeInstances", still_pending)
    events.register("before-call.ec2.DescribeInstances", waiter_breaks)
    with pytest.raises(ProviderError, match="did not reach 'running'"):
        fleet.up_master(sess)
    assert seen == ["pending", "broken"]
    assert instances(aws, "alpha", LIVE) == []
    assert len(instances(aws, "alpha", ["terminated", "shutting-down"])) == 1


def test_scaling_down_terminates_the_newest_workers(aws, subnet, tmp_path, monkeypatch):
    sess = session(subnet, tmp_path)
    # no SSH in this test: nothing bootstraps, and no test runs on the master
    monkeypatch.setattr(fleet.bootstrap, "run", lambda sess, nodes, board=None, master=None: [])
    monkeypatch.setattr(fleet.midrun, "running_test", lambda sess, master, meanwhile: None)
    fleet.up_master(sess)
    first = fleet.scale_workers(sess, 2).created
    later = fleet.scale_workers(sess, 5).created
    assert len(instances(aws, "alpha", LIVE)) == 6
    result = fleet.scale_workers(sess, 2)
    assert sorted(n.id for n in result.removed) == sorted(n.id for n in later)
    assert sorted(n.id for n in sess.nodes("worker")) == sorted(n.id for n in first)
    assert len(instances(aws, "alpha", LIVE)) == 3
    assert fleet.scale_workers(sess, 2).nothing_to_do
    fleet.down(sess)
    assert instances(aws, "alpha", LIVE) == []
    assert "nothing to do" in fleet.down(sess).nothing_to_do     # a second down is a no-op
