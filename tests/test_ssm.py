"""[ec2] connect = "ssm": SSH through AWS Systems Manager, no port 22 open to anything:
up, a headless run, logs, `swarm ssh`, the UI tunnel and down all go through the ProxyCommand.

The real `aws ssm start-session` needs AWS and cannot run offline: the CLI runs with stand-ins
for the AWS CLI and its Session Manager plugin first on its PATH (tests/emulation/ssm.py). The
`aws` stand-in refuses any argv but the documented ProxyCommand line and, as the SSM agent does
from inside the instance, connects to the node's sshd from within the host's own network
namespace. The lab enforces the security groups (firewall.py), so with no port-22 rule a direct
connection from the controller is dropped and only that path works.
"""
from __future__ import annotations

import json
import signal
import subprocess
import urllib.request

import pytest

from tests.emulation import ssm as ssm_lab
from tests.helpers import SWARM, assert_one_error_line, fake_aws_env, free_port, swarm
from tests.reliability import (all_instances, ec2_toml, fast_bootstrap, instances, key_pairs,
                               security_groups)
from tests.test_exposure import rule_set
from tests.test_iam_policy import SSM_ONLY, policy_actions
from tests.test_security_groups import dropped

STACK = "ssm"
REGION = "us-east-1"
PROFILE = f"swarm-{STACK}-{REGION}"     # the role and instance profile swarm makes


def ssm_toml(workdir, subnet_id, ec2_extra: str = "") -> None:
    p = ec2_toml(workdir, subnet_id, name=STACK, ec2_extra=ec2_extra)
    text = p.read_text()
    old = 'ssh_cidr = "10.77.0.0/16"\nconnect = "private"\n'
    assert old in text
    p.write_text(text.replace(old, 'connect = "ssm"\n'))
    fast_bootstrap(workdir)


def ingress(ec2) -> tuple[set[tuple], str]:
    """The stack's group's ingress sources and the group's id."""
    (group,) = security_groups(ec2, STACK)
    return rule_set(group), group["GroupId"]


def profile_of(ec2, instance_id: str) -> str:
    assoc = ec2.describe_iam_instance_profile_associations(
        Filters=[{"Name": "instance-id", "Values": [instance_id]}])["IamInstanceProfileAssociations"]
    (one,) = assoc
    return one["IamInstanceProfile"]["Arn"].rsplit("/", 1)[-1]


def iam_names(iam) -> tuple[list[str], list[str]]:
    roles = [r["RoleName"] for r in iam.list_roles()["Roles"]]
    profiles = [p["InstanceProfileName"] for p in iam.list_instance_profiles()["InstanceProfiles"]]
    return roles, profiles


def test_ssm_headless_flow_with_no_port_22_rule(workdir, cli_env, ec2_env, emulated_ec2,
                                                bridge_target, tmp_path):
    bin_dir = ssm_lab.install(tmp_path / "bin", emulated_ec2)
    ssm_toml(workdir, ec2_env.subnet_id)
    env = {**cli_env, **ec2_env.env, "PATH": ssm_lab.path_with(bin_dir)}
    used: set[str] = set()                  # the AWS actions swarm called (not this test)

    def cli(*args: str):
        start = len(emulated_ec2.calls)
        res = swarm(*args, cwd=workdir, env=env, timeout=240)
        used.update(f"{s}:{a}" for s, a, _ in emulated_ec2.calls[start:])
        return res

    res = cli("up", "master")
    assert res.code == 0, res.err
    # IAM's eventual consistency (quirks.profile_not_found): refused once, retried, said
    assert ("RunInstances", "InvalidParameterValue") in emulated_ec2.quirks.answered
    assert f"EC2 does not see the new instance profile {PROFILE} yet" in res.err, res.err
    ec2, iam = emulated_ec2.client(), emulated_ec2.client("iam")
    (master,) = instances(ec2, STACK, "master")
    assert len(all_instances(ec2)) == 1                       # one launch, whatever the retries
    assert profile_of(ec2, master["InstanceId"]) == PROFILE
    role = iam.get_role(RoleName=PROFILE)["Role"]
    tags = {t["Key"]: t["Value"] for t in role["Tags"]}
    assert tags["swarm:stack"] == STACK and tags["swarm:region"] == REGION, tags
    trust = role["AssumeRolePolicyDocument"]
    trust = json.loads(trust) if isinstance(trust, str) else trust
    assert trust["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    attached = iam.list_attached_role_policies(RoleName=PROFILE)["AttachedPolicies"]
    assert [p["PolicyArn"] for p in attached] == [
        "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"]
    profile = iam.get_instance_profile(InstanceProfileName=PROFILE)["InstanceProfile"]
    assert {t["Key"]: t["Value"] for t in profile["Tags"]}["swarm:stack"] == STACK

    res = cli("up", "workers", "-n", "1")
    assert res.code == 0, res.err
    (worker,) = instances(ec2, STACK, "worker")
    assert profile_of(ec2, worker["InstanceId"]) == PROFILE

    # Exactly the Locust ports from the group itself: nothing for 22, from anywhere.
    rules, gid = ingress(ec2)
    assert rules == {("tcp", 5557, 5558, "group", gid)}, rules
    for inst in (master, worker):                              # and the lab enforces it
        assert dropped(inst["PrivateIpAddress"], 22), inst["PrivateIpAddress"]

    res = cli("run", "-H", bridge_target.url, "-f", "viral_load.py", "--headless", "-u", "4",
              "-r", "4", "-t", "3s")
    assert res.code == 0, res.err
    assert "1 of 1 worker process(es) connected" in res.err, res.err
    out = sorted((workdir / "results" / STACK).iterdir())[-1]
    for name in ("locust_stats.csv", "report.html", "run.json", "logs/master.log",
                 "logs/worker-1.log"):
        assert (out / name).is_file(), name
    record = json.loads((out / "run.json").read_text())
    claimed = record["summary"]["total"]["requests"]
    assert claimed > 0 and abs(bridge_target.total() - claimed) <= max(1, claimed * 0.01)

    res = cli("logs", "worker-1")
    assert res.code == 0 and "locust" in res.out.lower(), (res.out, res.err)
    # `swarm ssh` is OpenSSH with the same ProxyCommand and pins; the node sees the connection
    # come from itself, as from the SSM agent
    res = cli("ssh", "master", "--", "echo", "$SSH_CONNECTION")
    assert res.code == 0, res.err
    assert res.out.split()[0] == master["PrivateIpAddress"], res.out
    # the UI tunnel through the same path
    res = cli("run", "-H", bridge_target.url, "-f", "viral_load.py", "-u", "2")
    assert res.code == 0, res.err
    port = free_port()
    ui = subprocess.Popen([*SWARM, "ui", "--port", str(port)], cwd=workdir, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = ui.stdout.readline().strip()        # printed once the tunnel listens
        assert url == f"http://127.0.0.1:{port}", (url, ui.stderr.read() if ui.poll() else "")
        stats = json.loads(urllib.request.urlopen(url + "/stats/requests", timeout=15).read())
        assert stats["worker_count"] == 1
    finally:
        ui.send_signal(signal.SIGINT)
        assert ui.wait(timeout=20) == 0

    # Every SSH connection went through the documented line, to both nodes by instance id.
    seen = ssm_lab.calls(bin_dir)
    want = ssm_lab.documented_line(REGION)
    assert seen and all(c[:3] + c[4:] == want[:3] + want[4:] for c in seen), seen
    assert {c[3] for c in seen} == {master["InstanceId"], worker["InstanceId"]}, seen

    res = cli("down")
    assert res.code == 0, res.err
    assert instances(ec2, STACK) == [] and emulated_ec2.hosts == {}
    assert security_groups(ec2, STACK) == [] and key_pairs(ec2, STACK) == []
    assert iam_names(iam) == ([], [])                          # the stack's role and profile

    # docs/iam-policy.json allows every call of this flow; the ssm-only ones are these
    missing = sorted(used - {"sts:GetCallerIdentity"} - policy_actions())
    assert missing == [], missing
    assert {a for a in used if a.startswith("iam:")} == {
        a for a in SSM_ONLY if a.startswith("iam:") and SSM_ONLY[a] == "called"}


def test_a_named_instance_profile_is_used_and_never_deleted(workdir, cli_env, ec2_env,
                                                             emulated_ec2, tmp_path):
    iam, ec2 = emulated_ec2.client("iam"), emulated_ec2.client()
    iam.create_role(RoleName="team-ssm", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                               "Principal": {"Service": "ec2.amazonaws.com"}}]}))
    iam.create_instance_profile(InstanceProfileName="team-ssm")
    iam.add_role_to_instance_profile(InstanceProfileName="team-ssm", RoleName="team-ssm")
    bin_dir = ssm_lab.install(tmp_path / "bin", emulated_ec2)
    ssm_toml(workdir, ec2_env.subnet_id, ec2_extra='instance_profile = "team-ssm"\n')
    env = {**cli_env, **ec2_env.env, "PATH": ssm_lab.path_with(bin_dir)}

    res = swarm("up", "master", cwd=workdir, env=env, timeout=180)
    assert res.code == 0, res.err
    (master,) = instances(ec2, STACK, "master")
    assert profile_of(ec2, master["InstanceId"]) == "team-ssm"
    assert iam_names(iam) == (["team-ssm"], ["team-ssm"])      # swarm made none of its own
    assert {c[3] for c in ssm_lab.calls(bin_dir)} == {master["InstanceId"]}

    res = swarm("down", cwd=workdir, env=env, timeout=180)
    assert res.code == 0, res.err
    assert instances(ec2, STACK) == []
    assert iam_names(iam) == (["team-ssm"], ["team-ssm"])      # the user's: kept as it was
    assert iam.get_instance_profile(
        InstanceProfileName="team-ssm")["InstanceProfile"]["Roles"][0]["RoleName"] == "team-ssm"


CLI_URL = "https://docs.aws.amazon.com/cli/latest/userguide/getting-started-install.html"
PLUGIN_URL = ("https://docs.aws.amazon.com/systems-manager/latest/userguide/"
              "session-manager-working-with-install-plugin.html")
NEEDS = 'error: connect = "ssm" needs the AWS CLI and the Session Manager plugin on this machine: '


@pytest.mark.parametrize("tools, code, line", [
    (("aws",), 2, f"{NEEDS}session-manager-plugin not found on PATH ({PLUGIN_URL})"),
    (("session-manager-plugin",), 2, f"{NEEDS}aws not found on PATH ({CLI_URL})"),
    ((), 2, f"{NEEDS}aws not found on PATH ({CLI_URL}); session-manager-plugin not found on "
            f"PATH ({PLUGIN_URL})"),
    (("aws", "session-manager-plugin"), 1,
     "error: instance profile 'nope' does not exist: fix [ec2] instance_profile, or leave it "
     "out and swarm makes one with AmazonSSMManagedInstanceCore"),
], ids=["no-plugin", "no-cli", "neither", "named-profile-missing"])
def test_what_ssm_needs_is_said_in_one_line_before_anything_is_launched(
        tools, code, line, workdir, cli_env, ec2_env, emulated_ec2, tmp_path):
    bin_dir = ssm_lab.install(tmp_path / "bin", emulated_ec2, cli="aws" in tools,
                              plugin="session-manager-plugin" in tools)
    extra = 'instance_profile = "nope"\n' if code == 1 else ""
    ssm_toml(workdir, ec2_env.subnet_id, ec2_extra=extra)
    env = {**cli_env, **ec2_env.env, "PATH": ssm_lab.path_with(bin_dir)}
    res = swarm("up", "master", cwd=workdir, env=env, timeout=60)
    assert_one_error_line(res, code)
    assert res.err_lines == [line], res.err
    assert all_instances(emulated_ec2.client()) == []
    for action in ("RunInstances", "CreateSecurityGroup", "CreateKeyPair", "CreateRole",
                   "CreateInstanceProfile"):
        assert emulated_ec2.call_count(action) == 0, action
    assert ssm_lab.calls(bin_dir) == []


# ---- the command line itself (pure: what the provider hands the runner) ----

def _runner(tmp_path, monkeypatch, ec2_extra: str, tools: tuple[str, ...]):
    from swarm import config
    from swarm.models import Node, NodeState, Role, SshAddress
    from swarm.providers.base import Stack
    from swarm.providers.ec2.provider import Ec2Provider

    fake_aws_env(monkeypatch, tmp_path, "eu-west-1")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in tools:
        (bin_dir / tool).write_text("#!/bin/sh\nexit 0\n")
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    cfg = config.parse(f'[stack]\nname = "cmd"\nprovider = "ec2"\n[ec2]\nregion = "eu-west-1"\n'
                       f'connect = "ssm"\n{ec2_extra}')
    node = Node(id="i-0123456789abcdef0", role=Role.MASTER, state=NodeState.RUNNING,
                ssh=SshAddress("i-0123456789abcdef0", 22, "ubuntu"))
    return Ec2Provider(cfg).runner(Stack.from_config(cfg), node)


def test_the_runner_reaches_a_node_by_instance_id_with_the_documented_proxy_command(
        tmp_path, monkeypatch):
    from swarm.remote.hops import expand
    from swarm.remote.base import Hop

    runner = _runner(tmp_path, monkeypatch, 'profile = "load test"\n',
                     ("aws", "session-manager-plugin"))
    assert (runner.host, runner.port, runner.user) == ("i-0123456789abcdef0", 22, "ubuntu")
    command = runner.route.proxy_command
    assert command == ("aws ssm start-session --target %h --document-name AWS-StartSSHSession "
                       "--parameters portNumber=%p --region eu-west-1 --profile 'load test'")
    assert runner.ssh_target().route.proxy_command == command      # `swarm ssh` uses it too
    assert expand(command, Hop("i-0123456789abcdef0", 22, "ubuntu")).split()[:9] == [
        "aws", *ssm_lab.documented_line("eu-west-1")[:3], "i-0123456789abcdef0",
        *ssm_lab.documented_line("eu-west-1")[4:8]]


def test_reaching_a_node_without_the_plugin_says_so(tmp_path, monkeypatch):
    from swarm.errors import UsageError

    with pytest.raises(UsageError, match="session-manager-plugin not found on PATH"):
        _runner(tmp_path, monkeypatch, "", ("aws",))
