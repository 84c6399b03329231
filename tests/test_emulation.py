"""Proves the offline harness in tests/emulation: emulated hosts answer real
SSH, are isolated from each other, moto launches/terminates them, and nothing
can leave the lab."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import paramiko
import pytest
from botocore.exceptions import ClientError

from tests.emulation import Host, Lab, LabError
from tests.emulation.plugin import make_ed25519_keypair, require_emulation
from tests.emulation.proc import _alive

REPO = Path(__file__).resolve().parent.parent
RUN_IN_LAB = REPO / "tests" / "run_in_lab.py"


# ---------------------------------------------------------------------------
# helpers


def ssh_client(host: Host, *, key_path: Path | None = None, pkey=None,
               known_key: str | None = None, timeout: float = 5.0,
               username: str = "root") -> paramiko.SSHClient:
    """paramiko client that only accepts the host's own host key."""
    client = paramiko.SSHClient()
    line = f"{host.ip} {known_key}" if known_key else host.known_hosts_line
    entry = paramiko.hostkeys.HostKeyEntry.from_line(line)
    client.get_host_keys().add(host.ip, entry.key.get_name(), entry.key)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(host.ip, username=username, key_filename=str(key_path) if key_path else None,
                   pkey=pkey, allow_agent=False, look_for_keys=False, timeout=timeout,
                   banner_timeout=timeout, auth_timeout=timeout)
    return client


def run(client: paramiko.SSHClient, cmd: str, timeout: float = 30.0) -> tuple[int, str, str]:
    _, out, err = client.exec_command(cmd, timeout=timeout)
    code = out.channel.recv_exit_status()
    return code, out.read().decode(), err.read().decode()


def netns_exists(name: str) -> bool:
    return os.path.exists(f"/run/netns/{name}")


def wait_until(predicate, timeout: float = 5.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / interval) + 1):
        if predicate():
            return True
        if time.monotonic() > deadline:
            break
        time.sleep(interval)
    return predicate()


# ---------------------------------------------------------------------------
# emulated hosts


def test_two_hosts_answer_ssh_and_are_separate_machines(emulated_hosts):
    (a, b), key = emulated_hosts(2)
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert a.ip != b.ip
    with ssh_client(a, key_path=key) as ca, ssh_client(b, key_path=key) as cb:
        code, out, _ = run(ca, "hostname; echo $HOME")
        assert code == 0 and out.split() == [a.name, "/root"]
        code, out, _ = run(cb, "hostname; echo $HOME")
        assert code == 0 and out.split() == [b.name, "/root"]
        assert a.name != b.name

        assert run(ca, "echo from-a > /root/only-on-a; echo tmp-a > /tmp/t-a")[0] == 0
        assert (a.home / "only-on-a").read_text() == "from-a\n"
        assert (a.tmp / "t-a").read_text() == "tmp-a\n"
        assert not (b.home / "only-on-a").exists()
        assert run(cb, "test -e /root/only-on-a || test -e /tmp/t-a")[0] == 1
        # a file dropped into b's home from the controller shows up on b only
        (b.home / "from-controller").write_text("hi")
        assert run(cb, "cat /root/from-controller")[1] == "hi"
        assert run(ca, "test -e /root/from-controller")[0] == 1


def test_sftp_works(emulated_hosts):
    (host,), key = emulated_hosts(1)
    with ssh_client(host, key_path=key) as client:
        sftp = client.open_sftp()
        sftp.putfo(io.BytesIO(b"payload"), "/root/up.txt")
        assert (host.home / "up.txt").read_bytes() == b"payload"
        sftp.close()


def test_locust_runs_over_ssh_from_the_venv_path(emulated_hosts, lab):
    (host,), key = emulated_hosts(1)
    with ssh_client(host, key_path=key) as client:
        code, out, err = run(client, "echo $PATH; command -v locust; locust --version")
    assert code == 0, err
    path, locust_bin, version = out.strip().splitlines()
    assert path.startswith(f"{lab.venv_bin}:")
    assert locust_bin == f"{lab.venv_bin}/locust"
    assert version.startswith("locust ")


def test_wrong_key_is_refused(emulated_hosts, tmp_path):
    (host,), _ = emulated_hosts(1)
    other = tmp_path / "other_key"
    make_ed25519_keypair(other)
    with pytest.raises(paramiko.AuthenticationException):
        ssh_client(host, key_path=other)


def test_exec_and_processes_are_per_host(emulated_hosts):
    (a, b), key = emulated_hosts(2)
    assert a.exec("hostname").stdout.strip() == a.name
    with ssh_client(a, key_path=key) as ca, ssh_client(b, key_path=key) as cb:
        # backgrounded the way swarm does it (pid file, SSH channel closes)
        code, _, err = run(ca, "cd /root && { nohup sleep 4321 >sleep.log 2>&1 </dev/null & "
                               "echo $! > sleep.pid; }")
        assert code == 0, err
        assert wait_until(lambda: a.processes("sleep 4321"))
        assert b.processes("sleep 4321") == []
        assert "sleep 4321" not in run(cb, "ps -eo args")[1]
        assert "sleep 4321" in a.exec("ps -eo args").stdout
        # pkill on b cannot touch a's process (own PID namespace)
        run(cb, "pkill -f 'sleep 4321'")
        time.sleep(0.1)
        assert a.processes("sleep 4321")
        assert run(ca, "kill $(cat /root/sleep.pid)")[0] == 0
        assert wait_until(lambda: not a.processes("sleep 4321"))


def test_power_off_is_a_stub_with_a_private_run(emulated_hosts):
    """shutdown / poweroff on a host (over SSH, by name and by path) are recorded in the
    host's own log and never reach this machine; the pending shutdown lives in the host's
    own /run, as systemd keeps it."""
    (a, b), key = emulated_hosts(2)
    sched = "/run/systemd/shutdown/scheduled"
    with ssh_client(a, key_path=key) as ca:
        assert run(ca, "shutdown -h +30 'bye'; /sbin/shutdown -h +45; poweroff")[0] == 0
        code, out, _ = run(ca, f"cat {sched}")
        assert code == 0 and out.startswith("USEC="), out
        assert run(ca, "shutdown -c")[0] == 0
        assert run(ca, f"test -e {sched}")[0] == 1
        assert run(ca, "touch /run/only-on-a")[0] == 0
    calls = a.power_calls()
    assert [(c.name, c.args[:2]) for c in calls] == [
        ("shutdown", ("-h", "+30")), ("shutdown", ("-h", "+45")), ("poweroff", ()),
        ("shutdown", ("-c",))]
    assert abs(calls[0].powers_off_at - time.time() - 30 * 60) < 60
    assert b.power_calls() == []
    assert b.exec("test -e /run/only-on-a").returncode == 1
    assert not os.path.exists("/run/only-on-a") and not os.path.exists(sched)
    assert a.exec("test -x /usr/sbin/sshd && test -d /run/sshd").returncode == 0


def test_each_host_has_a_root_of_its_own(emulated_hosts):
    """What a host writes as root anywhere (/etc, /usr, /var/lib) lands in its own layer: this
    machine and the other host never see it; Host.exec sees the root SSH sessions see, with
    the machine's files and the lab's Python; removing the host deletes its layer."""
    (a, b), key = emulated_hosts(2)
    paths = ["/etc/swarm-own-root", "/usr/local/swarm-own-root", "/var/lib/swarm-own-root"]
    with ssh_client(a, key_path=key) as ca:
        assert run(ca, "".join(f"echo {a.name} >{p}; " for p in paths) + "true")[0] == 0
    for path in paths:
        assert a.exec(f"cat {path}").stdout == f"{a.name}\n"
        assert (a.layer / path.lstrip("/")).read_text() == f"{a.name}\n"
        assert b.exec(f"test -e {path}").returncode == 1
        assert not os.path.exists(path)
    assert a.exec("test -x /usr/sbin/sshd && python -c 'import locust'").returncode == 0
    assert a.exec("hostname; cat /etc/hostname").stdout == f"{a.name}\n{a.name}\n"
    a.remove()
    assert not a.dir.exists()


def test_login_users_as_on_ec2(emulated_hosts):
    """`ubuntu` with passwordless sudo, `ec2-user` without: made in each host's own layer;
    root refuses the instance key as EC2 images do."""
    (u,), key = emulated_hosts(1, user="ubuntu")
    (e,), key2 = emulated_hosts(1, user="ec2-user", sudo=False)
    with ssh_client(u, key_path=key, username="ubuntu") as cu:
        code, out, _ = run(cu, "id -un; pwd; sudo -n id -u && sudo -n touch /etc/by-ubuntu")
        assert (code, out.split()) == (0, ["ubuntu", "/home/ubuntu", "0"])
    assert (u.layer / "etc/by-ubuntu").exists() and not os.path.exists("/etc/by-ubuntu")
    with ssh_client(u, key_path=key) as root:
        code, out, _ = run(root, "id -u")
        assert code == 142 and 'Please login as the user "ubuntu"' in out, (code, out)
    with ssh_client(e, key_path=key2, username="ec2-user") as ce:
        code, out, err = run(ce, "id -un; pwd; sudo -n true")
        assert code == 1 and out.split() == ["ec2-user", "/home/ec2-user"], (code, out)
        assert "password is required" in err, err
    assert not any(line.startswith(("ubuntu:", "ec2-user:"))
                   for line in Path("/etc/passwd").read_text().splitlines())


def test_hosts_have_no_route_out(emulated_hosts):
    (host,), _ = emulated_hosts(1)
    proc = host.exec("ip route get 8.8.8.8")
    assert proc.returncode != 0 and "unreachable" in proc.stderr.lower()
    assert "default" not in host.exec("ip route").stdout
    # but the bridge (where test targets live) is reachable
    assert host.exec("ip route get 10.77.1.1").returncode == 0


def test_lab_namespace_has_no_route_out():
    if not os.environ.get("SWARM_LAB"):
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail("CI must run the suite through tests/run_in_lab.py")
        pytest.skip("not running inside tests/run_in_lab.py")
    proc = subprocess.run(["ip", "route", "get", "8.8.8.8"], capture_output=True, text=True)
    assert proc.returncode != 0


def test_guard_blocks_outside_addresses_without_sending():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with pytest.raises(PermissionError, match="blocked by test network guard"):
            sock.connect(("8.8.8.8", 53))
        with pytest.raises(PermissionError):
            sock.connect_ex(("1.1.1.1", 443))
        with pytest.raises(OSError):
            sock.getpeername()  # never connected: nothing was sent
    finally:
        sock.close()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        with pytest.raises(PermissionError):
            udp.sendto(b"x", ("8.8.8.8", 53))
    with pytest.raises(PermissionError):
        socket.create_connection(("example.com", 80), timeout=1)
    with pytest.raises(PermissionError):
        socket.create_connection(("::ffff:8.8.8.8", 53), timeout=1)
    # loopback is allowed (refused by the kernel, not by the guard)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1)


def test_guard_install_uninstall_roundtrip():
    from tests.emulation.guard import install_guard

    uninstall = install_guard(["192.0.2.0/24"])
    try:
        with pytest.raises(PermissionError):
            socket.socket().connect(("198.51.100.1", 9))
    finally:
        uninstall()
    # the session guard (installed by the plugin) is still active
    with pytest.raises(PermissionError):
        socket.socket().connect(("198.51.100.1", 9))


def test_dead_hosts(emulated_hosts, tmp_path):
    (silent,), key = emulated_hosts(1, dead="silent")
    start = time.monotonic()
    with pytest.raises((paramiko.SSHException, OSError, EOFError)):
        ssh_client(silent, key_path=key, timeout=1.0)
    # 5x the timeout given, for a busy machine; without it a silent host holds the connect
    # for the kernel's SYN retries (about 2 minutes)
    assert time.monotonic() - start < 5

    (refusing,), key = emulated_hosts(1, dead="refuse")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((refusing.ip, 22), timeout=2).close()

    (hole,), key = emulated_hosts(1, dead="blackhole")
    with pytest.raises((socket.timeout, TimeoutError)):
        socket.create_connection((hole.ip, 22), timeout=0.5).close()


def test_kill_sshd_keeps_the_host_and_changed_host_key_is_refused(emulated_hosts):
    (host,), key = emulated_hosts(1)
    old_key = host.host_key_pub
    with ssh_client(host, key_path=key) as client:
        run(client, "cd /root && { nohup sleep 4322 >/dev/null 2>&1 </dev/null & }")
    assert wait_until(lambda: host.processes("sleep 4322"))

    host.kill_sshd()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host.ip, 22), timeout=2).close()
    assert host.processes("sleep 4322"), "killing sshd must not kill the host"

    host.start_sshd()
    with ssh_client(host, key_path=key) as client:
        assert run(client, "hostname")[1].strip() == host.name

    new_key = host.regen_host_key()
    assert new_key != old_key and host.host_key_pub == new_key
    with pytest.raises(paramiko.BadHostKeyException):
        ssh_client(host, key_path=key, known_key=old_key)
    with ssh_client(host, key_path=key) as client:
        assert run(client, "true")[0] == 0
    assert host.processes("sleep 4322")


def test_host_reaches_the_demo_target_on_the_bridge(emulated_hosts, bridge_target):
    """Hosts reach swarm.demo.target on the bridge (10.77.1.1), as every load test's Locust
    does: the request is answered and counted by the target."""
    (host,), key = emulated_hosts(1)
    url = f"{bridge_target.url}/health"
    with ssh_client(host, key_path=key) as client:
        code, out, err = run(client, f"python -c \"import urllib.request;"
                                     f"print(urllib.request.urlopen('{url}').status)\"")
    assert code == 0, err
    assert out.strip() == "200"
    assert bridge_target.counts() == {"GET /health": 1}


def test_bridge_target_fixture(request, lab, emulated_hosts):
    target = request.getfixturevalue("bridge_target")
    assert target.host == lab.bridge_ip
    (host,), _ = emulated_hosts(1)
    proc = host.exec(["python", "-c",
                      f"import urllib.request;urllib.request.urlopen('{target.url}/health')"])
    assert proc.returncode == 0, proc.stderr
    assert target.counts().get("GET /health") == 1


def _routes() -> str:
    return subprocess.run(["ip", "-o", "route"], capture_output=True, text=True,
                          timeout=10).stdout


def test_private_lab_cleans_up_everything(tmp_path):
    require_emulation()
    lab = Lab("10.77.9.0/24", base_dir=tmp_path)
    try:
        hosts = lab.add_hosts([{"ip": f"10.77.9.{10 + i}", "authorized_key": ""}
                               for i in range(3)])
        names = [h.netns for h in hosts] + [h.veth for h in hosts] + [lab.bridge]
        pids = [h.init_pid for h in hosts] + [h.pid for h in hosts]
        assert all(netns_exists(h.netns) for h in hosts)
        (hosts[0].home / "x").write_text("x")
        with pytest.raises(LabError):
            lab.add_host("10.77.9.10", "")  # taken
        with pytest.raises(LabError):
            lab.add_host("10.77.8.10", "")  # outside the subnet
        lab.remove_host(hosts[0].ip)
        assert not netns_exists(hosts[0].netns) and hosts[0].ip not in lab.hosts
        assert not hosts[0].dir.exists()
        # a second bridge, and hosts owning a public address on it: by /32 route, or its own
        public = lab.add_bridge("10.88.9.0/24")
        gate = lab.add_host("10.77.9.20", "", public_bridge=public, public_ip="54.214.9.9")
        names += [public.name, gate.public_veth]
        assert "54.214.9.9 dev " + public.name in _routes()
        scan = subprocess.run(["ssh-keyscan", "-T", "3", "-t", "ed25519", "54.214.9.9"],
                              capture_output=True, text=True, timeout=20).stdout
        assert gate.known_hosts_line_at("54.214.9.9") in scan, scan
        lab.remove_host(gate.ip)
        assert "54.214.9.9" not in _routes()
        lab.add_host("10.77.9.21", "", public_bridge=public)   # 10.88.9.2: left to close()
        hosts[1].stop()  # power off: processes gone, namespace kept
        assert not hosts[1].running and hosts[1].processes() == []
        assert netns_exists(hosts[1].netns)
        with pytest.raises(OSError):
            socket.create_connection((hosts[1].ip, 22), timeout=0.5).close()
    finally:
        lab.close()
        lab.close()  # idempotent
    assert lab.leftovers() == {"netns": [], "links": [], "routes": [], "processes": [],
                               "dirs": []}
    assert not any(os.path.exists(f"/sys/class/net/{n}") for n in names)
    assert not any(netns_exists(n) for n in names)
    assert not any(_alive(p) for p in pids)


def test_cost_of_ten_hosts(lab, capsys, record_property):
    specs = [{"authorized_key": ""} for _ in range(10)]
    t0 = time.monotonic()
    hosts = lab.add_hosts(specs)
    t1 = time.monotonic()
    try:
        assert len(hosts) == 10 and all(h.running for h in hosts)
    finally:
        for h in hosts:
            h.remove()
    t2 = time.monotonic()
    one_t0 = time.monotonic()
    single = lab.add_host(None, "")
    one_t1 = time.monotonic()
    pss = single.memory_pss_kib()
    single.remove()
    parallel, removal, one = (t1 - t0) / 10, (t2 - t1) / 10, one_t1 - one_t0
    record_property("per_host_start_s", round(parallel, 4))
    with capsys.disabled():
        print(f"\n[emulation] 10 hosts up in {t1 - t0:.2f}s ({parallel * 1000:.0f} ms/host), "
              f"removed in {t2 - t1:.2f}s ({removal * 1000:.0f} ms/host); "
              f"a single host alone: {one * 1000:.0f} ms, {pss / 1024:.1f} MiB PSS idle")


# ---------------------------------------------------------------------------
# moto as EC2


def ssh_group(ec2, subnet_id: str) -> list[str]:
    """SecurityGroupIds for a launch whose hosts answer SSH from the lab: the emulation enforces
    security groups (firewall.py), and the default group takes nothing from outside itself."""
    vpc = ec2.describe_subnets(SubnetIds=[subnet_id])["Subnets"][0]["VpcId"]
    gid = ec2.create_security_group(GroupName=f"ssh-{uuid.uuid4().hex[:8]}", VpcId=vpc,
                                    Description="ssh from the lab")["GroupId"]
    rule = [{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
             "IpRanges": [{"CidrIp": "10.77.0.0/16"}]}]
    for attempt in range(20):     # a new group is NotFound for a while (quirks.py), as on AWS
        try:
            ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=rule)
            return [gid]
        except ClientError as exc:
            if "NotFound" not in exc.response["Error"]["Code"] or attempt == 19:
                raise
            time.sleep(0.25)
    raise AssertionError("unreachable")


def test_ec2_instances_become_ssh_hosts(emulated_ec2, ec2_env, lab):
    env, subnet_id = ec2_env
    emulated_ec2.quirks.off()     # the hosts behind moto, not AWS's behaviour (quirks.py)
    assert env["AWS_ENDPOINT_URL"] == emulated_ec2.endpoint_url
    ec2 = emulated_ec2.client("ec2")
    pem = ec2.create_key_pair(KeyName="swarm-test")["KeyMaterial"]
    pkey = paramiko.RSAKey.from_private_key(io.StringIO(pem))
    res = ec2.run_instances(ImageId="ami-785db401", MinCount=3, MaxCount=3,
                            InstanceType="t3.micro", KeyName="swarm-test",
                            SubnetId=subnet_id, SecurityGroupIds=ssh_group(ec2, subnet_id),
                            UserData="#!/bin/sh\nshutdown -h now\n")
    instances = res["Instances"]
    ips = [i["PrivateIpAddress"] for i in instances]
    assert ips == ["10.77.1.4", "10.77.1.5", "10.77.1.6"]
    for inst in instances:
        host = emulated_ec2.host_for(inst["InstanceId"])
        assert host.ip == inst["PrivateIpAddress"] and host.ip in lab.hosts
        with ssh_client(host, pkey=pkey) as client:
            code, out, _ = run(client, "hostname; ls /root")
            assert code == 0
            assert out.split()[0] == f"ip-{host.ip.replace('.', '-')}"
        assert host.processes("shutdown") == []  # user data never runs
    netns = [emulated_ec2.host_for(i["InstanceId"]).netns for i in instances]

    ec2.terminate_instances(InstanceIds=[i["InstanceId"] for i in instances[:2]])
    assert not any(netns_exists(n) for n in netns[:2])
    assert netns_exists(netns[2])
    assert set(lab.hosts) >= {"10.77.1.6"} and not {"10.77.1.4", "10.77.1.5"} & set(lab.hosts)
    with pytest.raises(KeyError):
        emulated_ec2.host_for(instances[0]["InstanceId"])
    states = {i["InstanceId"]: i["State"]["Name"]
              for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]}
    assert states[instances[2]["InstanceId"]] == "running"


def test_ec2_imported_ed25519_key_and_cli_env(emulated_ec2, ec2_env, tmp_path):
    env, subnet_id = ec2_env
    emulated_ec2.quirks.off()     # the hosts behind moto, not AWS's behaviour (quirks.py)
    key = tmp_path / "id_ed25519"
    public = make_ed25519_keypair(key)
    ec2 = emulated_ec2.client("ec2")
    ec2.import_key_pair(KeyName="imported", PublicKeyMaterial=public.encode())
    inst = ec2.run_instances(ImageId="ami-785db401", MinCount=1, MaxCount=1,
                             KeyName="imported", SubnetId=subnet_id,
                             SecurityGroupIds=ssh_group(ec2, subnet_id))["Instances"][0]
    host = emulated_ec2.host_for(inst["InstanceId"])
    with ssh_client(host, key_path=key) as client:
        assert run(client, "true")[0] == 0

    # a CLI subprocess configured only through env() sees the same EC2
    full_env = emulated_ec2.subprocess_env()
    code = ("import boto3;"
            "r=boto3.client('ec2').describe_instances()['Reservations'];"
            "print(r[0]['Instances'][0]['PrivateIpAddress'])")
    proc = subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == host.ip


def test_ec2_ssm_ubuntu_params_are_seeded(emulated_ec2, ec2_env):
    ssm = emulated_ec2.client("ssm")
    for name in ("/aws/service/canonical/ubuntu/server/22.04/stable/current/amd64/hvm/"
                 "ebs-gp2/ami-id",
                 "/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/"
                 "ebs-gp3/ami-id"):
        ami = ssm.get_parameter(Name=name)["Parameter"]["Value"]
        images = emulated_ec2.client("ec2").describe_images(ImageIds=[ami])["Images"]
        assert images and images[0]["ImageId"] == ami


def test_ec2_dead_instances_and_outside_subnet(emulated_ec2, ec2_env):
    _, subnet_id = ec2_env
    emulated_ec2.quirks.sshd_late_s = 0  # about dead hosts, not booting ones
    emulated_ec2.make_dead("10.77.1.5", "refuse")
    ec2 = emulated_ec2.client("ec2")
    insts = ec2.run_instances(ImageId="ami-785db401", MinCount=2, MaxCount=2,
                              SubnetId=subnet_id,
                              SecurityGroupIds=ssh_group(ec2, subnet_id))["Instances"]
    good, dead = (emulated_ec2.host_for(i["InstanceId"]) for i in insts)
    assert good.ip == "10.77.1.4" and dead.ip == "10.77.1.5"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((dead.ip, 22), timeout=2).close()
    with socket.create_connection((good.ip, 22), timeout=2) as sock:
        assert sock.recv(4) == b"SSH-"

    # no subnet: moto hands out an address outside the lab -> no host for it
    outside = ec2.run_instances(ImageId="ami-785db401", MinCount=1, MaxCount=1)["Instances"][0]
    assert outside["PrivateIpAddress"] not in emulated_ec2.lab.hosts
    assert (outside["InstanceId"], outside["PrivateIpAddress"]) in emulated_ec2.skipped
    with pytest.raises(KeyError):
        emulated_ec2.host_for(outside["InstanceId"])


def test_ec2_parallel_launches_and_host_options(emulated_ec2, ec2_env):
    _, subnet_id = ec2_env
    emulated_ec2.quirks.sshd_late_s = 0  # about launches, not booting hosts
    seen = []

    def options(ip, index):
        seen.append((ip, index))
        return {"dead": "silent"} if index == 3 else None

    emulated_ec2.host_options = options
    errors = []
    groups = ssh_group(emulated_ec2.client("ec2"), subnet_id)

    def launch():
        try:
            emulated_ec2.client("ec2").run_instances(
                ImageId="ami-785db401", MinCount=2, MaxCount=2, SubnetId=subnet_id,
                SecurityGroupIds=groups)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=launch) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and not any(t.is_alive() for t in threads)
    hosts = emulated_ec2.hosts
    assert sorted(h.ip for h in hosts.values()) == [f"10.77.1.{n}" for n in (4, 5, 6, 7)]
    assert sorted(i for _, i in seen) == [0, 1, 2, 3]
    dead_ip = next(ip for ip, i in seen if i == 3)
    for host in hosts.values():
        if host.ip == dead_ip:
            assert host.dead == "silent"
        else:
            with socket.create_connection((host.ip, 22), timeout=2) as sock:
                assert sock.recv(4) == b"SSH-"


def test_ec2_reset_removes_hosts(emulated_ec2, ec2_env):
    _, subnet_id = ec2_env
    ec2 = emulated_ec2.client("ec2")
    inst = ec2.run_instances(ImageId="ami-785db401", MinCount=1, MaxCount=1,
                             SubnetId=subnet_id)["Instances"][0]
    host = emulated_ec2.host_for(inst["InstanceId"])
    emulated_ec2.reset()
    assert not netns_exists(host.netns)
    assert emulated_ec2.hosts == {}
    assert ec2.describe_instances()["Reservations"] == []
    emulated_ec2.make_subnet()  # ec2_env teardown expects a usable state


def test_mock_aws_in_process_does_not_spawn_hosts(emulated_ec2, lab):
    from moto import mock_aws
    import boto3

    before = set(lab.hosts)
    with mock_aws():
        ec2 = boto3.client("ec2", region_name="us-east-1", aws_access_key_id="x",
                           aws_secret_access_key="x")
        vpc = ec2.create_vpc(CidrBlock="10.77.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.77.1.0/24")["Subnet"]["SubnetId"]
        ec2.run_instances(ImageId="ami-785db401", MinCount=1, MaxCount=1, SubnetId=subnet)
    assert set(lab.hosts) == before
    emulated_ec2.reset()


# ---------------------------------------------------------------------------
# run_in_lab.py


def _run_in_lab(*cmd: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(RUN_IN_LAB), "--", *cmd],
                          capture_output=True, text=True, timeout=timeout)


def test_run_in_lab_isolates_and_propagates_exit_code():
    require_emulation()
    proc = _run_in_lab("sh", "-c", 'ip -o link; echo "lab=$SWARM_LAB"; exit 7')
    assert proc.returncode == 7, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 2 and ": lo:" in lines[0]
    name = lines[1].split("=", 1)[1]
    assert name.startswith("swarmlab-") and not netns_exists(name)


def test_run_in_lab_cleans_up_on_sigterm():
    require_emulation()
    proc = subprocess.Popen([sys.executable, str(RUN_IN_LAB), "--", "sh", "-c",
                             'echo "$SWARM_LAB"; exec sleep 60'],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        name = proc.stdout.readline().strip()
        assert name.startswith("swarmlab-") and netns_exists(name)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert rc == 128 + signal.SIGTERM
    assert not netns_exists(name)
