"""swarm.toml parsing: defaults, the example, and every rejection with its file:line."""
from pathlib import Path

import pytest

from swarm import config
from swarm.config import schema
from swarm.errors import ConfigError, UsageError
from tests.helpers import REPO, assert_one_error_line, swarm

P = Path("/p/swarm.toml")


def reject(text: str) -> str:
    with pytest.raises(ConfigError) as e:
        config.parse(text, P)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_defaults_without_a_file():
    c = config.parse("")
    assert (c.stack.name, c.stack.provider) == ("default", "local")
    assert (c.bootstrap.dir, c.bootstrap.script, c.bootstrap.remote_dir) == ("bootstrap", "bootstrap.sh", "swarm")
    assert (c.locust.files_dir, c.locust.processes, c.locust.web_port, c.locust.master_port) == \
        ("locustfiles", -1, 8089, 5557)
    assert c.local.workers_processes == 1
    assert c.ec2.ttl == 4 * 3600 and c.ec2.spot is schema.Spot.OFF and c.ec2.connect == "public"
    assert c.profiles == {}


def test_the_example_documents_every_key_and_parses():
    text = (REPO / "swarm.toml.example").read_text()
    c = config.parse(text, REPO / "swarm.toml.example")
    assert {n: p.users for n, p in c.profiles.items()} == {"light": 10, "medium": 50, "heavy": 100, "stress": 200}
    for section, cls in schema.SECTIONS.items():
        assert f"[{section}]" in text, section
        for key in schema.keys_of(cls):
            assert f"{key} =" in text or f"[{section}.{key}]" in text, (section, key)


def test_the_example_profiles_are_the_seed_websocket_plan():
    c = config.parse((REPO / "swarm.toml.example").read_text())
    got = {n: (p.users, p.env["WS_MESSAGES"], p.checks) for n, p in c.profiles.items()}
    assert got == {
        "light": (10, "10", ("avg[WS rtt]<50ms", "success>99.5%")),
        "medium": (50, "20", ("avg[WS rtt]<100ms", "success>99%")),
        "heavy": (100, "50", ("avg[WS rtt]<200ms", "success>98%")),
        "stress": (200, "100", ("avg[WS rtt]<500ms", "success>95%")),
    }


def test_a_profile_takes_its_checks_as_a_list_too():
    c = config.parse('[profiles.ci]\nchecks = ["p95<200ms", "fail_ratio<1%"]\n')
    assert c.profiles["ci"].checks == ("p95<200ms", "fail_ratio<1%")
    assert config.parse("[profiles.ci]\nusers = 1\n").profiles["ci"].checks == ()


def test_sections_are_frozen_dataclasses():
    c = config.parse('[ec2]\nregion = "eu-west-1"\nttl = "1h30m"\n')
    assert c.ec2.region == "eu-west-1" and c.ec2.ttl == 5400
    with pytest.raises(Exception):
        c.ec2.region = "us-east-1"


@pytest.mark.parametrize("text, needles", [
    ("[stak]\n", ["/p/swarm.toml:1", "unknown section [stak]", "did you mean 'stack'"]),
    ("[ec2]\nregion = \"eu-west-1\"\nttll = \"1h\"\n", ["swarm.toml:3", "unknown key 'ttll'", "did you mean 'ttl'"]),
    ("[locust]\nprocesess = 2\n", ["swarm.toml:2", "did you mean 'processes'"]),
    ("[stack]\nprovider = \"ec3\"\n", ["swarm.toml:2", "provider", "did you mean 'ec2'"]),
    ("[stack]\nprovider = 3\n", ["must be a string"]),
    ("[locust]\nprocesses = \"4\"\n", ["processes must be an integer"]),
    ("[locust]\nprocesses = -2\n", ["processes must be >= -1"]),
    ("[local]\nworkers_processes = 0\n", ["workers_processes must be >= 1"]),
    ("[locust]\nweb_port = 70000\n", ["web_port must be <= 65535"]),
    ("[locust]\nweb_port = 5557\n", ["web_port and master_port must differ"]),
    ("[locust]\nextra_args = \"--foo\"\n", ["extra_args must be a list of strings"]),
    ("[ec2]\nttl = \"forever\"\n", ["ttl must be a duration", "'forever'"]),
    ("[ec2]\nttl = \"30d\"\n", ["between 10m and 7d"]),
    ("[ec2]\nttl = \"9m\"\n", ["between 10m and 7d", "5 minutes before a scheduled shutdown"]),
    ("[ec2]\nspot = \"yes\"\n", ["[ec2] spot must be true", '"required"', "or false, got 'yes'"]),
    ("[ec2]\nspot = 1\n", ["[ec2] spot must be true", "got 1"]),
    ("[ec2]\nssh_cidr = \"0.0.0.0/0\"\n", ["whole internet"]),
    ("[ec2]\nssh_cidr = \"::/0\"\n", ["whole internet"]),
    ("[ec2]\nssh_cidr = \"my laptop\"\n", ["CIDR"]),
    ("[ec2]\nami = \"ubuntu-24.4\"\n", ["did you mean 'ubuntu-24.04'"]),
    ("[ec2]\nregion = \"mars-1\"\n", ["region"]),
    ("[ec2]\nworker_type = \"big\"\n", ["instance type"]),
    ("[ec2]\nconnect = \"vpn\"\n", ["public, private"]),
    ("[ec2]\nkey_name = \"k\"\n", ["key_name and key_file go together"]),
    ("[ec2]\nconnect = \"bastion\"\n", ["needs [ec2] bastion"]),
    ("[ec2]\nconnect = \"bastion\"\nbastion = \"u@b:99999\"\n", ["[ec2] bastion", "1-65535"]),
    ("[ec2]\npublic_ip = \"no\"\n", ["public_ip must be true or false"]),
    ("[ec2.tags]\n\"swarm:stack\" = \"x\"\n", ["reserved prefix"]),
    ("[stack]\nname = \"has space\"\n", ["letters, digits"]),
    ("[stack]\nprovider = \"hosts\"\n", ["needs [hosts] master"]),
    ("[hosts]\nmaster = \"root@\"\n", ["user@host", "ssh_config alias"]),
    ("[hosts]\nmaster = \"u@h\"\nworkers = [\"u@h:99999\"]\n", ["port must be 1-65535"]),
    ("[profiles.light]\nusers = -3\n", ["users must be >= 1"]),
    ("[profiles.light]\nuser = 3\n", ["unknown key 'user'", "did you mean 'users'"]),
    ("[profiles.light.checks]\navg = 50\n", ["[profiles.light] checks has no key 'avg'",
                                              "did you mean 'avg_ms'"]),
    ("[profiles.light.checks]\navg_ms = \"fast\"\n", ["checks avg_ms must be a number"]),
    ("[profiles.light]\nchecks = \"p95<1s\"\n", ["checks must be a list of strings"]),
    ("[profiles.light]\nenv = { WS_RATE = 2 }\n", ["[profiles.light] env"]),
    ("[checks]\np95 = 200\n", ["did you mean 'p95_ms'"]),
    ("[checks]\nfail_ratio = -1\n", ["fail_ratio must be >= 0"]),
    ("[checks]\nfail_ratio = 5\n", ["fail_ratio must be a fraction of 1 or a percent",
                                     'did you mean "5%" or 0.05?']),
    ("[checks]\nfail_ratio = \"150%\"\n", ["between 0% and 100%"]),
    ("[stack\nname=1", ["not valid TOML"]),
])
def test_rejections_name_the_key_and_place(text, needles):
    msg = reject(text)
    for n in needles:
        assert n in msg, (n, msg)


@pytest.mark.parametrize("ec2, wanted", [
    ("", True),                                                   # connect = "public"
    ('connect = "private"', None),                                # the subnet decides
    ('connect = "private"\npublic_ip = false', False),
    ('connect = "bastion"\nbastion = "u@b"', False),             # none unless asked
    ('connect = "bastion"\nbastion = "u@b"\npublic_ip = true', True),
])
def test_public_ip_follows_connect_unless_set(ec2, wanted):
    assert config.parse(f"[ec2]\n{ec2}\n").ec2.public_ip_wanted is wanted


def test_hosts_entries_parse():
    assert config.parse_host("ubuntu@10.0.0.1") == ("ubuntu", "10.0.0.1", None)
    assert config.parse_host("ec2-user@box.example.com:2222") == ("ec2-user", "box.example.com", 2222)
    assert config.parse_host("lg1") == (None, "lg1", None)   # an ssh_config alias


def test_stack_override_is_validated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert config.load(stack="other").stack.name == "other"
    monkeypatch.setenv("SWARM_STACK", "from-env")
    assert config.load().stack.name == "from-env"
    with pytest.raises(UsageError):
        config.load(stack="bad/name")


def test_cli_reports_config_errors_in_one_line(workdir, cli_env):
    (workdir / "swarm.toml").write_text("[stack]\nname = \"x\"\n[ec2]\nttl = \"forever\"\n")
    res = swarm("status", cwd=workdir, env=cli_env)
    assert_one_error_line(res, 2, "swarm.toml:4", "ttl")
    res = swarm("--config", "nope.toml", "status", cwd=workdir, env=cli_env)
    assert_one_error_line(res, 2, "nope.toml not found")


def test_init_copies_the_example_and_refuses_to_overwrite(workdir, cli_env):
    res = swarm("init", cwd=workdir, env=cli_env)
    assert res.code == 0, res.err
    assert (workdir / "swarm.toml").read_text() == (REPO / "swarm.toml.example").read_text()
    (workdir / "swarm.toml").write_text("# mine\n")
    res = swarm("init", cwd=workdir, env=cli_env)
    assert_one_error_line(res, 1, "already exists")
    assert (workdir / "swarm.toml").read_text() == "# mine\n"


def test_fail_ratio_takes_a_percent_or_a_fraction():
    from swarm.config import parse
    assert parse('[checks]\nfail_ratio = "1%"\n').checks.fail_ratio == 0.01
    assert parse("[checks]\nfail_ratio = 0.05\n").checks.fail_ratio == 0.05
