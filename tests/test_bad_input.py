"""Bad input, as a user types it: every case is the CLI in a subprocess, and must end in exactly
one `error: …` line naming the problem, exit 2 (bad input) or 1 (the provider said no), no
traceback, and nothing launched.

Two tables:
* CASES run against moto as EC2 (provider ec2, the lab subnet) unless they name another
  provider: after each, moto holds zero instances and was never asked to launch one.
* RUN_CASES are `swarm run` mistakes against a live local stack (a master and a worker): after
  each, no Locust runs and nothing was shipped to any node (`run` checks everything locally
  first).

"Unreadable" locustfiles: the suite runs as root, for whom chmod 000 changes nothing, so the
unreadable cases are a directory with the file's name, a FIFO (opening it would block for ever:
swarm must never open it), a dangling symlink, and bytes that are not UTF-8.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from swarm.pipeline.session import locust_version

from tests.helpers import assert_one_error_line, processes_under, swarm
from tests.reliability import all_instances, ec2_toml


@dataclass
class Case:
    id: str
    args: tuple[str, ...]
    code: int
    needles: tuple[str, ...]
    ec2_extra: str = ""                 # appended to [ec2]
    extra: str = ""                     # appended after [bootstrap] (new sections)
    toml: Callable[[str], str] | None = None   # the whole swarm.toml, given the subnet id
    prep: Callable[[Path], None] | None = None
    env: dict[str, str] = field(default_factory=dict)


def _key_file(mode: int) -> Callable[[Path], None]:
    def prep(work: Path) -> None:
        key = work / "my-key.pem"
        key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nnot really\n"
                       "-----END OPENSSH PRIVATE KEY-----\n")
        os.chmod(key, mode)
    return prep


def _empty_bootstrap_dir(work: Path) -> None:
    (work / "bootstrap-empty").mkdir()


def _old_bootstrap(work: Path) -> None:
    """bootstrap.sh as `swarm init` wrote it before [locust] otel: it knows no extras."""
    script = work / "bootstrap" / "bootstrap.sh"
    script.write_text(script.read_text().replace("SWARM_LOCUST_EXTRAS", "SWARM_LOCUST_EXTRA5"))


def _plain_wheelhouse(work: Path) -> None:
    """A wheelhouse as `swarm wheelhouse` makes it without --otel (the names are all `up` checks)."""
    (work / "wheels").mkdir()
    for name in (f"locust-{_LOCUST}-py3-none-any.whl", "pip-24.0-py3-none-any.whl"):
        (work / "wheels" / name).write_bytes(b"")


def _sub(old: str, new: str) -> Callable[[str], str]:
    """The base EC2 swarm.toml with one value changed."""
    def toml(subnet: str) -> str:
        text = ec2_toml_text(subnet)
        assert old in text
        return text.replace(old, new)
    return toml


def _hosts_toml(entry: str) -> Callable[[str], str]:
    return lambda subnet: (f'[stack]\nname = "h"\nprovider = "hosts"\n'
                           f'[hosts]\nmaster = "root@10.77.1.250"\nworkers = ["{entry}"]\n')


UP = ("up", "master")
_LOCUST = locust_version()
CASES = [
    # -- swarm.toml itself --
    Case("malformed-toml", UP, 2, ("not valid TOML",),
         toml=lambda s: '[stack\nname = "x"\n'),
    Case("not-utf8-toml", UP, 2, ("cannot read",),
         toml=lambda s: '[stack]\nname = "caf\xe9"\n'),   # written as latin-1 below
    Case("unknown-key", UP, 2, ("unknown key 'regoin'", "did you mean 'region'", "swarm.toml:"),
         ec2_extra='regoin = "us-east-1"\n'),
    Case("unknown-section", UP, 2, ("unknown section [ec3]",), extra="[ec3]\nspot = true\n"),
    Case("wrong-type", UP, 2, ("[locust] processes must be an integer",),
         toml=lambda s: '[stack]\nprovider = "ec2"\n[locust]\nprocesses = "four"\n'),
    Case("worker-args-not-a-list", UP, 2, ("[locust] worker_args must be a list of strings",),
         toml=lambda s: '[stack]\nprovider = "ec2"\n[locust]\nworker_args = "--tag x"\n'),
    Case("env-not-a-table", UP, 2, ("[locust] env must be a table",),
         toml=lambda s: '[stack]\nprovider = "ec2"\n[locust]\nenv = "TOKEN=x"\n'),
    Case("env-value-not-a-string", UP, 2, ("[locust] env TOKEN must be a string, not list",),
         toml=lambda s: '[stack]\nprovider = "ec2"\n[locust]\nenv = { TOKEN = ["hunter2"] }\n'),
    Case("env-bad-name", UP, 2, ("[locust] env", "'MY-VAR' is not an environment variable name"),
         toml=lambda s: '[stack]\nprovider = "ec2"\n[locust]\nenv = { "MY-VAR" = "x" }\n'),
    Case("otel-not-a-bool", UP, 2, ("[locust] otel must be true or false, not str",),
         toml=lambda s: '[stack]\nprovider = "ec2"\n[locust]\notel = "yes"\n'),
    Case("unknown-provider", UP, 2, ("must be one of local, hosts, ec2", "gce"),
         toml=lambda s: '[stack]\nprovider = "gce"\n'),
    Case("ports-collide", UP, 2, ("web_port and master_port must differ",),
         toml=lambda s: '[stack]\nprovider = "ec2"\n[locust]\nweb_port = 5557\nmaster_port = 5557\n'),
    Case("bad-ttl", UP, 2, ("[ec2] ttl", "'forever'"), ec2_extra='ttl = "forever"\n'),
    Case("ttl-too-long", UP, 2, ("[ec2] ttl", "between 10m and 7d"), ec2_extra='ttl = "30d"\n'),
    Case("spot-not-a-choice", UP, 2, ("[ec2] spot must be true", '"required"', "'always'"),
         ec2_extra='spot = "always"\n'),
    Case("ttl-too-short", UP, 2, ("[ec2] ttl", "between 10m and 7d", "refuses new logins 5 minutes",
                                  "'5m'"), ec2_extra='ttl = "5m"\n'),
    Case("extend-too-short", ("extend", "9m"), 2, ("DURATION", "between 10m and 7d", "'9m'")),
    Case("extend-not-a-duration", ("extend", "soon"), 2, ("DURATION", "like '4h'", "'soon'")),
    Case("extend-on-local", ("extend", "2h"), 2, ("local provider's nodes have no expiry",),
         toml=lambda s: '[stack]\nname = "l"\nprovider = "local"\n'),
    Case("reserved-tag", UP, 2, ("reserved prefix",), ec2_extra='tags = { "aws:owner" = "me" }\n'),
    Case("missing-config", ("--config", "nope.toml", "up", "master"), 2, ("nope.toml not found",)),
    # -- EC2 settings that only AWS (moto) can refuse --
    Case("unknown-region", UP, 2, ("xx-nowhere-1",), toml=_sub('"us-east-1"', '"xx-nowhere-1"')),
    Case("malformed-region", UP, 2, ("must be an AWS region",), toml=_sub('"us-east-1"', '"Europe"')),
    Case("bad-ami-id", UP, 1, ("ami-0123456789abcdef0",),
         toml=_sub('"al2023"', '"ami-0123456789abcdef0"')),
    Case("malformed-ami", UP, 2, ("[ec2] ami", "ubuntu-20.04"), toml=_sub('"al2023"', '"ubuntu-20.04"')),
    Case("unknown-instance-type", UP, 1, ("c9.mega",), ec2_extra='master_type = "c9.mega"\n'),
    Case("unknown-subnet", UP, 1, ("subnet", "subnet-0000000000deadbee"),
         toml=lambda s: ec2_toml_text(s).replace(s, "subnet-0000000000deadbee")),
    Case("missing-key-file", UP, 2, ("my-key.pem", "not found"),
         ec2_extra='key_name = "my-key"\nkey_file = "my-key.pem"\n'),
    Case("open-key-file", UP, 2, ("my-key.pem", "chmod 600"),
         ec2_extra='key_name = "my-key"\nkey_file = "my-key.pem"\n', prep=_key_file(0o644)),
    Case("key-name-without-file", UP, 2, ("key_name and key_file go together",),
         ec2_extra='key_name = "my-key"\n'),
    Case("ssh-cidr-world", UP, 2, ("ssh_cidr", "whole internet"),
         toml=_sub('"10.77.0.0/16"', '"0.0.0.0/0"')),
    Case("ssh-cidr-world-v6", UP, 2, ("ssh_cidr", "whole internet"),
         toml=_sub('"10.77.0.0/16"', '"::/0"')),
    Case("ssh-cidr-garbage", UP, 2, ("ssh_cidr", "must be a CIDR"),
         toml=_sub('"10.77.0.0/16"', '"my office"')),
    Case("instance-profile-without-ssm", UP, 2,
         ('[ec2] instance_profile is only used with connect = "ssm"',),
         ec2_extra='instance_profile = "team-ssm"\n'),
    Case("ssh-cidr-with-ssm", UP, 2, ('[ec2] ssh_cidr is not used with connect = "ssm"',
                                      "no SSH ingress at all"),
         toml=_sub('connect = "private"', 'connect = "ssm"')),
    Case("bastion-not-named", UP, 2, ('connect = "bastion" needs [ec2] bastion',),
         toml=_sub('connect = "private"', 'connect = "bastion"')),
    Case("bastion-without-connect", UP, 2, ("[ec2] bastion is only used with",),
         ec2_extra='bastion = "root@10.77.1.250"\n'),
    Case("public-ip-false-connect-public", UP, 2, ("public_ip = false", "bastion"),
         toml=_sub('connect = "private"', 'connect = "public"\npublic_ip = false')),
    # not an instance of the region, and no ssh_cidr to say where its SSH comes from
    Case("bastion-not-an-instance", UP, 2, ("[ec2] bastion 10.77.1.250", "ssh_cidr"),
         toml=_sub('ssh_cidr = "10.77.0.0/16"\nconnect = "private"',
                   'connect = "bastion"\nbastion = "root@10.77.1.250"')),
    # -- hosts --
    Case("hosts-entry-no-user", UP, 2, ("[hosts] workers", "user@host"),
         toml=_hosts_toml("10.77.1.251")),
    Case("hosts-entry-bad-port", UP, 2, ("[hosts] workers", "port must be 1-65535"),
         toml=_hosts_toml("root@10.77.1.251:99999")),
    # -- bootstrap --
    Case("bootstrap-dir-without-script", UP, 2, ("bootstrap script", "not found"),
         extra='dir = "bootstrap-empty"\n', prep=_empty_bootstrap_dir),
    Case("otel-with-an-old-bootstrap-script", UP, 2,
         ("bootstrap.sh predates [locust] otel = true", "no SWARM_LOCUST_EXTRAS"),
         toml=_sub("processes = 1\n", "processes = 1\notel = true\n"), prep=_old_bootstrap),
    Case("otel-wheelhouse-without-the-sdk", UP, 2,
         ("[bootstrap] wheelhouse", "has no opentelemetry_sdk-*.whl", "`swarm wheelhouse --otel`"),
         toml=lambda s: _sub("processes = 1\n", "processes = 1\notel = true\n")(s)
         + 'offline = true\nwheelhouse = "wheels"\n', prep=_plain_wheelhouse),
    # -- stack names --
    Case("stack-name-space", ("--stack", "my stack!", "up", "master"), 2, ("--stack", "'my stack!'")),
    Case("stack-name-too-long", ("--stack", "s" * 40, "up", "master"), 2, ("--stack", "1-32")),
    Case("stack-name-from-env", UP, 2, ("--stack", "tag:evil"), env={"SWARM_STACK": "tag:evil"}),
    Case("stack-name-in-toml", UP, 2, ("[stack] name", "swarm/x"),
         toml=_sub('name = "rel"', 'name = "swarm/x"')),
    # -- worker counts --
    Case("n-zero", ("up", "workers", "-n", "0"), 2, ("-n must be a whole number of at least 1",)),
    Case("n-negative", ("up", "workers", "-n", "-3"), 2, ("at least 1", "-3")),
    Case("n-not-a-number", ("up", "workers", "-n", "abc"), 2, ("'abc' is not a valid integer",)),
    Case("n-huge", ("up", "workers", "-n", "100000"), 2, ("limit of 500",)),
    Case("n-missing", ("up", "workers"), 2, ("needs -n N",)),
    Case("master-with-n", ("up", "master", "-n", "2"), 2, ("one master",)),
    # -- commands on a stack that is not there --
    Case("up-workers-without-master", ("up", "workers", "-n", "2"), 2, ("no master", "up master")),
    Case("run-without-master", ("run", "-H", "http://10.77.1.1:9", "-f", "signups.py"), 2,
         ("no master", "up master")),
]


def ec2_toml_text(subnet: str) -> str:
    """The base EC2 swarm.toml of these tests, as text."""
    return (f'[stack]\nname = "rel"\nprovider = "ec2"\n'
            f'[ec2]\nregion = "us-east-1"\nami = "al2023"\nsubnet_id = "{subnet}"\n'
            f'ssh_cidr = "10.77.0.0/16"\nconnect = "private"\nssh_user = "root"\n'
            f'[locust]\nprocesses = 1\n[bootstrap]\nssh_timeout = 10\n')


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input_is_one_line_and_launches_nothing(case: Case, workdir, cli_env, ec2_env,
                                                    emulated_ec2):
    if case.toml is not None:
        text = case.toml(ec2_env.subnet_id)
        (workdir / "swarm.toml").write_bytes(
            text.encode("latin-1") if case.id == "not-utf8-toml" else text.encode())
    else:
        ec2_toml(workdir, ec2_env.subnet_id, ec2_extra=case.ec2_extra, extra=case.extra)
    if case.prep:
        case.prep(workdir)
    env = {**cli_env, **ec2_env.env, **case.env}
    res = swarm(*case.args, cwd=workdir, env=env, timeout=60)
    assert_one_error_line(res, case.code, *case.needles)
    assert res.out == ""
    assert "hunter2" not in res.err     # a bad [locust] env value is never quoted back
    ec2 = emulated_ec2.client()
    assert all_instances(ec2) == []
    for action in ("RunInstances", "CreateSecurityGroup", "CreateKeyPair"):
        assert emulated_ec2.call_count(action) == 0, action   # nothing created, not even shared
    assert emulated_ec2.hosts == {}


def test_down_of_a_stack_that_does_not_exist(workdir, cli_env, ec2_env, emulated_ec2):
    """Not an error, by design: `swarm down` is idempotent so CI can always run it in a
    `finally`. It still names the stack, says there is nothing, and touches nothing."""
    ec2_toml(workdir, ec2_env.subnet_id)
    res = swarm("--stack", "never-made", "down", cwd=workdir, env={**cli_env, **ec2_env.env})
    assert res.code == 0, res.err
    assert res.err_lines == ["stack 'never-made' has no nodes; nothing to do"], res.err
    for action in ("RunInstances", "TerminateInstances", "DeleteSecurityGroup", "DeleteKeyPair"):
        assert emulated_ec2.call_count(action) == 0, action
    assert all_instances(emulated_ec2.client()) == []


# ---- `swarm run` mistakes, against a live stack: nothing is shipped or started ----

def _write(name: str, text: str | bytes) -> Callable[[Path], None]:
    def prep(files: Path) -> None:
        p = files / name
        p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return prep


def _dir_named(name: str) -> Callable[[Path], None]:
    return lambda files: (files / name).mkdir()


def _fifo(name: str) -> Callable[[Path], None]:
    return lambda files: os.mkfifo(files / name)


def _dangling(name: str) -> Callable[[Path], None]:
    return lambda files: (files / name).symlink_to(files / "gone-for-good.py")


GOOD = "from locust import HttpUser, task\n\nclass U(HttpUser):\n    @task\n    def t(self):\n        pass\n"
H = ("-H", "http://127.0.0.1:9")


@dataclass
class RunCase:
    id: str
    args: tuple[str, ...]
    needles: tuple[str, ...]
    prep: Callable[[Path], None] | None = None
    code: int = 2


RUN_CASES = [
    RunCase("locustfile-missing", (*H, "-f", "nope.py"), ("locustfile 'nope.py' not found",)),
    RunCase("locustfile-empty", (*H, "-f", "empty.py"), ("empty.py is empty",), _write("empty.py", "")),
    RunCase("locustfile-blank", (*H, "-f", "blank.py"), ("blank.py is empty",),
            _write("blank.py", "\n   \n\t\n")),
    RunCase("locustfile-is-a-directory", (*H, "-f", "adir.py"), ("adir.py", "not a regular file"),
            _dir_named("adir.py")),
    RunCase("locustfile-is-a-fifo", (*H, "-f", "pipe.py"), ("pipe.py", "not a regular file"),
            _fifo("pipe.py")),
    RunCase("locustfile-dangling-symlink", (*H, "-f", "link.py"), ("link.py", "broken symlink"),
            _dangling("link.py")),
    RunCase("locustfile-not-utf8", (*H, "-f", "latin.py"), ("latin.py cannot be read",),
            _write("latin.py", b"# caf\xe9\n" + GOOD.encode())),
    RunCase("locustfile-syntax-error", (*H, "-f", "broken.py"), ("broken.py:3: syntax error",),
            _write("broken.py", "from locust import HttpUser\n\nclass U(HttpUser)\n    pass\n")),
    RunCase("locustfile-no-user-class", (*H, "-f", "nouser.py"), ("defines no User class",),
            _write("nouser.py", "import locust\n\ndef helper():\n    return 1\n")),
    RunCase("host-not-a-url", ("-H", "staging.example.com", "-f", "signups.py"),
            ("bad -H 'staging.example.com'",)),
    RunCase("host-wrong-scheme", ("-H", "ftp://10.77.1.1/", "-f", "signups.py"), ("bad -H",)),
    RunCase("host-with-space", ("-H", "http://exa mple.com", "-f", "signups.py"), ("bad -H",)),
    RunCase("check-garbage", (*H, "-f", "signups.py", "--check", "p95<<3"), ("bad --check 'p95<<3'",)),
    RunCase("check-unknown-metric", (*H, "-f", "signups.py", "--check", "p42<3ms"),
            ("unknown metric 'p42'",)),
    RunCase("check-wrong-unit", (*H, "-f", "signups.py", "--check", "rps>5ms"), ("rps takes",)),
    RunCase("check-empty-name", (*H, "-f", "signups.py", "--check", "p95[]<1s"),
            ("bad --check 'p95[]<1s'", "[] names no stats entry")),
    RunCase("check-cpu-of-a-name", (*H, "-f", "signups.py", "--check", "cpu[worker-1]<90%"),
            ("cpu is the nodes' peak",)),
    RunCase("check-relative-in-ms", (*H, "-f", "signups.py", "--check", "p95<+10ms"),
            ("a relative check is a signed percent",)),
    RunCase("check-success-over-100", (*H, "-f", "signups.py", "--check", "success>101%"),
            ("success is a fraction",)),
    RunCase("check-relative-without-baseline",
            (*H, "-f", "signups.py", "--headless", "-t", "2s", "--check", "p95[WS rtt]<+10%"),
            ("relative check 'p95[WS rtt]<+10%'", "add --baseline prev|last|RUN")),
    RunCase("baseline-none-yet", (*H, "-f", "signups.py", "--headless", "-t", "2s",
                                  "--baseline", "prev", "--check", "p95<+10%"),
            ("--baseline prev: stack 'badrun' has no passed run in results/badrun/ yet",)),
    RunCase("baseline-last-none-yet", (*H, "-f", "signups.py", "--headless", "-t", "2s",
                                       "--baseline", "last"),
            ("--baseline last: stack 'badrun' has no run with statistics",)),
    RunCase("baseline-unknown-run", (*H, "-f", "signups.py", "--headless", "-t", "2s",
                                     "--baseline", "1999"), ("--baseline: no run '1999'",)),
    RunCase("baseline-not-headless", (*H, "-f", "signups.py", "--baseline", "last"),
            ("--baseline judges a headless run",)),
    RunCase("baseline-anyway-alone", (*H, "-f", "signups.py", "--baseline-anyway"),
            ("--baseline-anyway goes with --baseline",)),
    RunCase("junit-not-headless", (*H, "-f", "signups.py", "--junit", "load.xml"),
            ("--junit reports a headless run",)),
    RunCase("junit-is-a-directory", (*H, "-f", "signups.py", "--headless", "-t", "2s",
                                     "--junit", "locustfiles"), ("--junit", "is a directory")),
    RunCase("profile-unknown", (*H, "-f", "signups.py", "--profile", "nightly"),
            ("unknown profile 'nightly'",)),
    RunCase("profile-bad-check", (*H, "-f", "signups.py", "--profile", "typo"),
            ("[profiles.typo] checks: bad --check 'p95<<1'",)),
    RunCase("run-time-bad", (*H, "-f", "signups.py", "-t", "5 minutes"), ("-t", "'5 minutes'")),
    RunCase("headless-without-run-time", (*H, "-f", "signups.py", "--headless"), ("need a run time",)),
    RunCase("users-zero", (*H, "-f", "signups.py", "-u", "0"), ("-u",)),
    RunCase("spawn-rate-negative", (*H, "-f", "signups.py", "-r", "-1"), ("-r",)),
]


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory):
    """A local stack with a master and one worker, shared by the RUN_CASES."""
    from tests.helpers import REPO, free_port

    root = tmp_path_factory.mktemp("badrun")
    work, state = root / "work", root / "state"
    shutil.copytree(REPO / "locustfiles", work / "locustfiles",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (work / "swarm.toml").write_text(
        f'[stack]\nname = "badrun"\nprovider = "local"\n'
        f"[locust]\nweb_port = {free_port()}\nmaster_port = {free_port()}\n"
        '[profiles.typo]\nchecks = ["p95<<1"]\n')
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "SWARM_", "GITHUB_STEP_SUMMARY"))}
    env.update(SWARM_STATE_DIR=str(state), PYTHONPATH=str(REPO), NO_COLOR="1")
    assert swarm("up", "master", cwd=work, env=env).code == 0
    assert swarm("up", "workers", "-n", "1", cwd=work, env=env).code == 0
    try:
        yield work, env, state
    finally:
        swarm("down", cwd=work, env=env)


@pytest.mark.parametrize("case", RUN_CASES, ids=lambda c: c.id)
def test_bad_run_input_ships_and_starts_nothing(case: RunCase, local_stack):
    work, env, state = local_stack
    if case.prep:
        case.prep(work / "locustfiles")
    res = swarm("run", *case.args, cwd=work, env=env, timeout=60)
    assert_one_error_line(res, case.code, *case.needles)
    nodes = [d for d in (state / "local" / "badrun").iterdir() if d.is_dir()]
    assert len(nodes) == 2
    for node in nodes:                     # nothing shipped, nothing started
        assert not (node / "swarm").exists(), sorted(p.name for p in node.rglob("*"))
    assert processes_under(state) == []
