"""The other-regions logic on its own: which local state counts, how a region that is not
enabled, refuses, or never answers is reported, and the warning lines. (The CLI against the
emulated cloud is tests/test_reach.py.)"""
from __future__ import annotations

import threading
import time

import pytest

from swarm.pipeline.regions import to_clean, unanswered, warnings
from swarm.providers.base import Elsewhere
from swarm.providers.ec2 import regions


def test_local_state_counts_only_in_other_regions_and_only_when_something_is_there(
        tmp_path, monkeypatch):
    monkeypatch.setenv("SWARM_STATE_DIR", str(tmp_path))
    assert regions.local_regions("s", "us-east-1") == []               # no state dir at all
    for region, files in (("us-east-1", ["id_swarm"]), ("eu-west-1", ["known_hosts"]),
                          ("eu-north-1", []), ("sa-east-1", None)):
        if files is None:
            (tmp_path / "ec2" / region / "other").mkdir(parents=True)   # another stack's
            continue
        d = tmp_path / "ec2" / region / "s"
        d.mkdir(parents=True)
        for f in files:
            (d / f).write_text("")
    assert regions.local_regions("s", "us-east-1") == ["eu-west-1"]


class FakeClient:
    """A DescribeInstances paginator that answers `count`, raises `error`, or holds `hold`s."""

    def __init__(self, count=0, error=None, hold=0.0, gate=None):
        self.count, self.error, self.hold, self.gate = count, error, hold, gate

    def get_paginator(self, name):
        assert name == "describe_instances"
        return self

    def paginate(self, Filters):
        assert {"Name": "tag:swarm:stack", "Values": ["s"]} in Filters
        if self.hold:
            self.gate.wait(self.hold)
        if self.error:
            raise self.error
        return [{"Reservations": [{"Instances": [{}] * self.count}]}]


class FakeSession:
    def __init__(self, clients):
        self.clients = clients

    def client(self, service, region_name, config):
        assert service == "ec2" and config.connect_timeout <= 5
        return self.clients[region_name]


def client_error(code):
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": "no"}}, "DescribeInstances")


def test_a_region_not_enabled_is_skipped_a_refusal_named_and_a_silent_one_bounded(monkeypatch):
    monkeypatch.setattr(regions, "SCAN_TIMEOUT_S", 0.5)
    gate = threading.Event()
    session = FakeSession({
        "eu-west-1": FakeClient(count=2),
        "eu-north-1": FakeClient(count=0),
        "af-south-1": FakeClient(error=client_error("AuthFailure")),        # not opted in
        "me-south-1": FakeClient(error=client_error("OptInRequired")),
        "ap-east-1": FakeClient(error=client_error("UnauthorizedOperation")),
        "sa-east-1": FakeClient(hold=10.0, gate=gate),                       # never answers
    })
    began = time.monotonic()
    try:
        got = regions.count_instances(session, sorted(session.clients), "s", ["running"])
        took = time.monotonic() - began
    finally:
        gate.set()
    # half the 10 s the silent region holds its answer: the scan stopped waiting for it after
    # SCAN_TIMEOUT_S (0.5 s) rather than waiting it out
    assert took < 5, took
    assert got == {"eu-west-1": 2, "eu-north-1": 0, "ap-east-1": "UnauthorizedOperation",
                   "sa-east-1": "no answer in 0.5s"}


def test_regions_never_started_before_the_deadline_are_unanswered_not_a_crash(monkeypatch):
    """More regions than threads, every thread held past the deadline: the regions still
    queued are cancelled when the scan stops waiting (a CLI traceback before: the scan took
    longer than SCAN_TIMEOUT_S on a busy machine)."""
    monkeypatch.setattr(regions, "SCAN_TIMEOUT_S", 0.3)
    gate = threading.Event()
    names = [f"xx-test-{i}" for i in range(20)]       # 16 threads: 4 never start
    session = FakeSession({r: FakeClient(hold=10.0, gate=gate) for r in names})
    try:
        got = regions.count_instances(session, names, "s", ["running"])
    finally:
        gate.set()
    assert got == {r: "no answer in 0.3s" for r in names}


def test_elsewhere_asks_the_local_regions_or_every_region(tmp_path, monkeypatch):
    monkeypatch.setenv("SWARM_STATE_DIR", str(tmp_path))
    (tmp_path / "ec2" / "eu-north-1" / "s").mkdir(parents=True)
    (tmp_path / "ec2" / "eu-north-1" / "s" / "id_swarm").write_text("")
    asked = []

    def count(session, names, stack, states):
        asked.append(list(names))
        return {r: (2 if r == "eu-west-1" else 0) for r in names}

    monkeypatch.setattr(regions, "count_instances", count)
    monkeypatch.setattr(regions, "every_region",
                        lambda session, here: ["eu-north-1", "eu-west-1", "us-west-2"])
    assert regions.elsewhere(None, "us-east-1", "s", ["running"], everywhere=False) == [
        Elsewhere("eu-north-1", 0, True)]
    assert regions.elsewhere(None, "us-east-1", "s", ["running"], everywhere=True) == [
        Elsewhere("eu-north-1", 0, True), Elsewhere("eu-west-1", 2, False)]
    assert asked == [["eu-north-1"], ["eu-north-1", "eu-west-1", "us-west-2"]]


def test_every_region_of_the_partition_but_this_one():
    boto3 = pytest.importorskip("boto3")
    names = regions.every_region(boto3.Session(region_name="us-east-1"), "us-east-1")
    assert "us-east-1" not in names and {"eu-west-1", "us-west-2"} <= set(names)
    assert len(names) >= 16 and not any(n.startswith("cn-") for n in names)


def test_the_warning_lines():
    found = [Elsewhere("eu-west-1", 2, False), Elsewhere("eu-north-1", 0, True),
             Elsewhere("ap-east-1", None, False, "UnauthorizedOperation"),
             Elsewhere("sa-east-1", None, True, "no answer in 10s")]
    assert warnings("x", found) == [
        "stack x also has 2 instance(s) in eu-west-1: `swarm down --all-regions` or set [ec2] "
        "region",
        "stack x also has local state in eu-north-1 (no instances; its key pair or security "
        "group may be left there): `swarm down --all-regions` or set [ec2] region",
        "could not look for stack x in 2 region(s): ap-east-1 (UnauthorizedOperation), "
        "sa-east-1 (no answer in 10s)",
    ]
    assert unanswered("x", found[:2]) == [] and warnings("x", []) == []
    assert to_clean(found) == ["eu-west-1", "eu-north-1", "sa-east-1"]
