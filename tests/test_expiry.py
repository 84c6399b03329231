"""One expiry for the stack (issue 13, item 4), as users see it: the CLI in a subprocess against
the emulated cloud. Every emulated host has a stub `shutdown` (tests/emulation/power.py) that
records what swarm scheduled there; the tags are read back from moto. User data never runs on
an emulated host, so what the stubs record is what `swarm` scheduled over SSH (bootstrap when
user data did not, `swarm extend`)."""
from __future__ import annotations

import base64
import calendar
import json
import re
import time

import pytest

from tests.helpers import assert_one_error_line, swarm
from tests.reliability import ec2_toml, fast_bootstrap, instances, locust_pids

STACK = "expiry"
EXPIRES = "swarm:expires-at"


@pytest.fixture
def stack_env(workdir, cli_env, ec2_env):
    ec2_toml(workdir, ec2_env.subnet_id, name=STACK, ec2_extra='ttl = "1h"\n')
    fast_bootstrap(workdir)
    return {**cli_env, **ec2_env.env}


def ok(*args: str, workdir, env, timeout: float = 180):
    res = swarm(*args, cwd=workdir, env=env, timeout=timeout)
    assert res.code == 0, (args, res.out, res.err)
    return res


def tags(ec2) -> dict[str, float]:
    """instance id -> its expires-at tag (unix seconds), from moto."""
    out = {}
    for i in instances(ec2, STACK):
        value = {t["Key"]: t["Value"] for t in i["Tags"]}[EXPIRES]
        out[i["InstanceId"]] = calendar.timegm(time.strptime(value, "%Y-%m-%dT%H:%M:%SZ"))
    return out


def scheduled_at(host) -> float:
    """When the host's last `shutdown -h +M` powers it off (the stub's record)."""
    calls = [c for c in host.power_calls() if c.powers_off_at is not None]
    assert calls, host.power_calls()
    return calls[-1].powers_off_at


def status(workdir, env) -> dict:
    return json.loads(ok("status", "--json", workdir=workdir, env=env).out)


def test_extend_moves_every_shutdown_and_tag_and_a_later_worker_inherits_it(
        workdir, stack_env, emulated_ec2):
    ec2 = emulated_ec2.client()
    ok("up", "master", workdir=workdir, env=stack_env)
    ok("up", "workers", "-n", "2", workdir=workdir, env=stack_env)
    first = tags(ec2)
    assert len(first) == 3 and len(set(first.values())) == 1, first   # one expiry, from the master
    (expiry,) = set(first.values())
    assert abs(expiry - (time.time() + 3600)) < 120
    # user data did not run here: bootstrap found no shutdown and scheduled it for the tag
    for iid, host in emulated_ec2.hosts.items():
        assert abs(scheduled_at(host) - first[iid]) <= 60, host.power_calls()

    res = ok("extend", "3h", workdir=workdir, env=stack_env)
    asked = time.time() + 3 * 3600
    assert "Extend" in res.out and res.out.count("UTC") == 3, res.out
    assert re.search(rf"stack {STACK} powers off at \S+ \S+ UTC \(in 3h00m; was \S+ UTC\)",
                     res.err), res.err
    moved = tags(ec2)
    assert set(moved) == set(first) and len(set(moved.values())) == 1, moved
    (new,) = set(moved.values())
    assert abs(new - asked) < 60
    for host in emulated_ec2.hosts.values():
        assert host.power_calls()[-1].args[0] == "-h", host.power_calls()   # the last: extend's
        assert abs(scheduled_at(host) - new) <= 60, host.power_calls()
    st = status(workdir, stack_env)
    assert st["expires_at"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(new))
    assert {n["expires_at"] for n in st["nodes"]} == {st["expires_at"]}

    ok("up", "workers", "-n", "3", workdir=workdir, env=stack_env)
    now = tags(ec2)
    (newest,) = set(now) - set(moved)
    master = next(i["InstanceId"] for i in instances(ec2, STACK, "master"))
    assert now[newest] == now[master] == new                          # inherited, not a fresh TTL
    assert abs(scheduled_at(emulated_ec2.host_for(newest)) - new) <= 60
    data = ec2.describe_instance_attribute(InstanceId=newest, Attribute="userData")
    script = base64.b64decode(data["UserData"]["Value"]).decode()
    minutes = int(re.search(r"shutdown -h \+(\d+) ", script).group(1))
    assert abs(minutes * 60 - (new - time.time())) <= 120, script      # the time left, not 1h

    view = ok("status", workdir=workdir, env=stack_env).out
    assert "powers off at" in view and "swarm extend" in view, view
    ok("down", workdir=workdir, env=stack_env)


def test_an_unreachable_node_is_named_and_keeps_its_expiry(workdir, stack_env, emulated_ec2):
    ec2 = emulated_ec2.client()
    ok("up", "master", workdir=workdir, env=stack_env)
    ok("up", "workers", "-n", "2", workdir=workdir, env=stack_env)
    st = status(workdir, stack_env)
    ids = {n["name"]: n["id"] for n in st["nodes"]}
    before = tags(ec2)
    emulated_ec2.host_for(ids["worker-2"]).kill_sshd()

    res = swarm("extend", "2h", cwd=workdir, env=stack_env, timeout=180)
    assert res.code == 1, (res.out, res.err)
    assert "Traceback" not in res.err
    line = res.err_lines[-1]
    assert line.startswith("error: extend failed on 1 of 3 node(s) (worker-2)"), line
    assert "run `swarm extend 2h` again" in line, line
    assert re.search(r"worker-2 .*unreachable", res.out), res.out
    after = tags(ec2)
    assert after[ids["worker-2"]] == before[ids["worker-2"]]
    for name in ("master", "worker-1"):
        assert abs(after[ids[name]] - (time.time() + 7200)) < 60
    ok("down", workdir=workdir, env=stack_env)


def test_a_run_longer_than_the_time_left_is_refused_before_it_starts(
        workdir, cli_env, ec2_env, emulated_ec2):
    ec2_toml(workdir, ec2_env.subnet_id, name=STACK, ec2_extra='ttl = "30m"\n')
    fast_bootstrap(workdir)
    env = {**cli_env, **ec2_env.env}
    ok("up", "master", workdir=workdir, env=env)
    ok("up", "workers", "-n", "1", workdir=workdir, env=env)
    res = swarm("run", "-H", "http://10.77.1.1:9", "-f", "signups.py", "--headless", "-t", "2h",
                cwd=workdir, env=env, timeout=60)
    assert_one_error_line(res, 2, f"the run needs 2h but stack {STACK} powers off in ",
                          "UTC): run `swarm extend 2h10m` first")
    assert re.search(r"powers off in (29|30)m \(at \d\d:\d\d UTC\)", res.err), res.err
    assert all(locust_pids(h) == [] for h in emulated_ec2.hosts.values())
    ok("down", workdir=workdir, env=env)


def test_bootstrap_warns_when_no_shutdown_can_be_scheduled(workdir, stack_env, emulated_ec2):
    """worker-1's host can schedule nothing (its `shutdown` fails, its /run is read-only, as if
    user data never ran and logind refused): `up` names it, says what it means and what to do,
    and still brings it up; the master, where it works, is not named."""
    emulated_ec2.host_options = lambda ip, index: {"power_broken": True} if index == 1 else None
    ok("up", "master", workdir=workdir, env=stack_env)
    res = ok("up", "workers", "-n", "1", workdir=workdir, env=stack_env)
    warned = [line for line in res.err_lines if "no shutdown scheduled" in line]
    assert warned == ["! node worker-1: no shutdown scheduled (shutdown -h and its sleep; "
                      "poweroff fallback both failed, or no root or sudo -n): it will not "
                      "power off at the TTL; `swarm down` when done"], res.err
    (worker,) = instances(emulated_ec2.client(), STACK, "worker")
    assert emulated_ec2.host_for(worker["InstanceId"]).power_calls()[-1].args[:1] == ("-h",)
    ok("down", workdir=workdir, env=stack_env)


def test_the_power_off_scripts_on_a_host_with_and_without_logind(emulated_hosts):
    """swarm's own schedule and check (remote/poweroff.py), run on an emulated host: where
    `shutdown` fails (no logind) the sleep; poweroff fallback is started and seen alive; a
    later schedule through `shutdown` replaces it (the sleeper is gone); `only_if_missing`
    leaves a pending shutdown alone."""
    from swarm.remote import poweroff

    (host,), _ = emulated_hosts(1)
    no_logind = "mkdir -p /root/nologind && printf '#!/bin/sh\\nexit 1\\n' >/root/nologind/shutdown" \
                " && chmod +x /root/nologind/shutdown && PATH=/root/nologind:$PATH; "
    probe = poweroff.schedule_probe(30)
    got = probe.parse(host.exec(no_logind + probe.command).stdout)
    assert got.how == poweroff.PowerOff.FALLBACK and abs(got.at - time.time() - 1800) < 60, got
    assert host.processes("sleep 1800")
    probe = poweroff.schedule_probe(90)
    got = probe.parse(host.exec(probe.command).stdout)
    assert got.how == poweroff.PowerOff.SYSTEMD and abs(got.at - time.time() - 5400) < 60, got
    assert not host.processes("sleep 1800; poweroff")                 # the fallback is dropped
    probe = poweroff.schedule_probe(20, only_if_missing=True)
    got = probe.parse(host.exec(probe.command).stdout)
    assert abs(got.at - time.time() - 5400) < 60, got                  # left as it was
    assert [c.minutes for c in host.power_calls()] == [90]
    check = poweroff.check_probe()
    assert check.parse(host.exec(check.command).stdout) == got


def test_durations_and_hints():
    from swarm.pipeline import expiry
    from swarm.remote import poweroff

    assert expiry.extend_hint(2 * 3600) == "swarm extend 2h10m"        # + 7 min, up to 10 min
    assert expiry.extend_hint(60) == "swarm extend 10m"
    assert expiry.left_text(72 * 60 + 10) == "1h12m" and expiry.left_text(3 * 86400) == "3d"
    assert poweroff.minutes_until(1000 + 61, 1000) == 2 and poweroff.minutes_until(0, 10) == 1
    assert poweroff.parse("noise\n").how == poweroff.PowerOff.NONE
    assert poweroff.parse("swarm-poweroff fallback 5000000\n") == poweroff.Scheduled(
        poweroff.PowerOff.FALLBACK, 5.0)


def test_no_new_node_when_the_stack_is_about_to_power_off(workdir, stack_env, emulated_ec2):
    """The stack's expiry (its master's tag, the only state) is 5 minutes away: `up workers`
    is refused before anything is launched, with the `swarm extend` to run."""
    ec2 = emulated_ec2.client()
    ok("up", "master", workdir=workdir, env=stack_env)
    (master,) = instances(ec2, STACK, "master")
    soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 300))
    ec2.create_tags(Resources=[master["InstanceId"]], Tags=[{"Key": EXPIRES, "Value": soon}])
    launches = emulated_ec2.call_count("RunInstances")
    res = swarm("up", "workers", "-n", "1", cwd=workdir, env=stack_env, timeout=60)
    assert_one_error_line(res, 2, f"a new node needs 7m but stack {STACK} powers off in 5m",
                          "run `swarm extend 10m` first")
    assert emulated_ec2.call_count("RunInstances") == launches
    ok("down", workdir=workdir, env=stack_env)
