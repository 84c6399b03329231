"""[locust] otel = true: Locust's own --otel on the master and every worker, this machine's
OTEL_* variables passed through as [locust] env is, the exporter's API key nowhere else.

A loopback OTLP/HTTP receiver records what the real Locust processes export. What comes from
whom is told apart by Locust's own signals: only the processes running users (the workers)
make HTTP spans and `locust.client.duration`; only the master reports `locust.users.count`.
Each export's resource names its process (`process.pid`, through the standard
OTEL_EXPERIMENTAL_RESOURCE_DETECTORS, passed through like any OTEL_ variable) and its host.
"""
from __future__ import annotations

import http.server
import importlib.metadata
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from swarm.locust import shell
from swarm.pipeline.plan import otel_env
from swarm.pipeline.session import missing_for_extra
from tests.helpers import REPO, SWARM, CLIResult, assert_one_error_line, swarm
from tests.test_worker_env import _files_holding

SERVICE = "swarm-otel-test"
VERSION = importlib.metadata.version("locust")


@dataclass
class Export:
    path: str  # /v1/traces, /v1/metrics, /v1/logs
    authorization: str
    resources: list[dict]  # per resource: its attributes, and the span or metric names


@dataclass
class Receiver:
    """OTLP/HTTP (protobuf) on host:port, recording every export in memory (never on disk:
    the test searches the disk for the secret)."""

    host: str
    exports: list[Export] = field(default_factory=list)

    def __post_init__(self) -> None:
        got = self.exports

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                got.append(Export(self.path, self.headers.get("authorization", ""),
                                  _resources(self.path, body)))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((self.host, 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def names_by(self, path: str, key: str) -> dict[str, set[str]]:
        """Resource attribute `key` (process.pid, host.name) -> the names it exported."""
        out: dict[str, set[str]] = {}
        for e in self.exports:
            if e.path == path:
                for r in e.resources:
                    out.setdefault(str(r["attributes"].get(key)), set()).update(r["names"])
        return out


def _resources(path: str, body: bytes) -> list[dict]:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    def attrs(resource) -> dict:
        return {a.key: getattr(a.value, a.value.WhichOneof("value")) for a in resource.attributes}

    if path == "/v1/traces":
        req = ExportTraceServiceRequest.FromString(body)
        return [{"attributes": attrs(r.resource),
                 "names": {s.name for ss in r.scope_spans for s in ss.spans}}
                for r in req.resource_spans]
    if path == "/v1/metrics":
        req = ExportMetricsServiceRequest.FromString(body)
        return [{"attributes": attrs(r.resource),
                 "names": {m.name for sm in r.scope_metrics for m in sm.metrics}}
                for r in req.resource_metrics]
    if path == "/v1/logs":
        req = ExportLogsServiceRequest.FromString(body)
        return [{"attributes": attrs(r.resource), "names": set()} for r in req.resource_logs]
    return []


@pytest.fixture
def receiver():
    r = Receiver("127.0.0.1")
    yield r
    r.close()


def otel_vars(endpoint: str, secret: str) -> dict[str, str]:
    """What a user exports before `swarm run`: the standard SDK variables."""
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_HEADERS": f"authorization=Bearer {secret}",
        "OTEL_SERVICE_NAME": SERVICE,
        "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": "process",
        # export within a short run, not once a minute
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }


def _cmdlines() -> dict[int, tuple[str, str]]:
    """pid -> (command line, working directory) of every process on this machine."""
    out = {}
    for p in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            cmdline = p.read_bytes().decode(errors="replace")
            out[int(p.parent.name)] = (cmdline, os.readlink(p.parent / "cwd"))
        except OSError:
            pass      # a process that ended meanwhile
    return out


def _locusts(seen: set[tuple[int, str, str]], role: str, under: Path) -> dict[int, list[str]]:
    """The Locust processes among the command lines seen (`python .../bin/locust ...`), not
    the shells that start them, running in a directory under `under` (this test's: other
    tests and other checkouts run Locust on this machine too): pid -> argv."""
    argvs = {p: c.split("\0") for p, c, cwd in seen if Path(cwd).is_relative_to(under)}
    return {p: a for p, a in argvs.items()
            if len(a) > 1 and a[1].endswith("/bin/locust") and role in a}


def run_watching_cmdlines(args: tuple[str, ...], cwd: Path, env: dict[str, str],
                          timeout: float = 120) -> tuple[subprocess.CompletedProcess, set]:
    """The CLI in a subprocess while /proc is read every 50 ms: every (pid, command line) seen
    during the run (the start commands' shells, ssh, Locust itself; \\0 between words)."""
    seen: set[tuple[int, str]] = set()
    with subprocess.Popen([*SWARM, *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as proc:
        reader = threading.Thread(target=lambda: setattr(proc, "got", proc.communicate()))
        reader.start()
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.05) + 1):
            if proc.poll() is not None or time.monotonic() > deadline:
                break
            seen.update((p, c, cwd) for p, (c, cwd) in _cmdlines().items() if c)  # a zombie's is empty
            time.sleep(0.05)
        reader.join(timeout=max(1.0, deadline - time.monotonic()))
        if reader.is_alive():
            proc.kill()
            reader.join(timeout=10)
            raise AssertionError(f"swarm {' '.join(args)} took more than {timeout}s")
    out, err = proc.got
    return subprocess.CompletedProcess(args, proc.returncode, out, err), seen


def test_otel_exports_from_master_and_workers_the_key_nowhere_else(
        workdir, cli_env, local_toml, target, receiver, tmp_path):
    secret = "s3cr3t-" + secrets.token_hex(12)
    local_toml("otel = true\n")
    env = {**cli_env, **otel_vars(receiver.endpoint, secret)}
    outputs = []
    try:
        for args in (("up", "master"), ("up", "workers", "-n", "2")):
            res = swarm(*args, cwd=workdir, env=env)
            assert res.code == 0, res.err
            outputs.append(res.out + res.err)
        res, seen = run_watching_cmdlines(
            ("--debug", "run", "-H", target.url, "-f", "viral_load.py", "--headless", "-u", "4",
             "-r", "4", "-t", "3s"), workdir, env)
        outputs.append(res.stdout + res.stderr)
        assert res.returncode == 0, res.stderr
        assert "2 of 2 worker process(es) connected" in res.stderr
    finally:
        res = swarm("down", cwd=workdir, env=env)
        outputs.append(res.out + res.err)
    assert res.code == 0, res.err

    # --otel on every Locust's command line; the key on none of the command lines seen
    masters, workers = _locusts(seen, "--master", tmp_path), _locusts(seen, "--worker", tmp_path)
    assert len(masters) == 1 and len(workers) == 2, (masters, workers)
    assert all("--otel" in argv for argv in [*masters.values(), *workers.values()])
    assert [c for _, c, _ in seen if secret in c] == []

    # the exports: all carry the key, the workers' spans and request metrics, the master's
    # user count, each from its own process
    assert {e.path for e in receiver.exports} >= {"/v1/traces", "/v1/metrics"}
    assert {e.authorization for e in receiver.exports} == {f"Bearer {secret}"}
    assert {r["attributes"]["service.name"] for e in receiver.exports for r in e.resources} == {
        SERVICE}
    spans = receiver.names_by("/v1/traces", "process.pid")
    metrics = receiver.names_by("/v1/metrics", "process.pid")
    span_pids = {int(p) for p, names in spans.items() if any(n.startswith("GET /") for n in names)}
    duration_pids = {int(p) for p, names in metrics.items() if "locust.client.duration" in names}
    users_pids = {int(p) for p, names in metrics.items() if "locust.users.count" in names}
    assert span_pids == set(workers), (spans, workers)
    assert duration_pids == span_pids, metrics
    assert users_pids == set(masters), (metrics, masters)

    record = json.loads(next((workdir / "results" / "t").glob("*/run.json")).read_text())
    assert record["otel"] is True
    assert set(otel_vars("", "")) <= set(record["env_names"])
    assert all(secret not in o for o in outputs)
    # results/ (run.json, logs/, CSVs), the state dir, the node dirs (until down): nowhere
    assert _files_holding(tmp_path, secret.encode()) == []
    assert list(tmp_path.rglob(shell.ENV_FILE)) == []


def test_on_hosts_the_variables_reach_the_warm_forked_locust_only(
        workdir, cli_env, emulated_hosts, bridge_target, lab):
    """Over SSH the OTEL_ variables exist only on this machine: they reach each host's Locust
    (forked by its warm Locust) through the env file, and bootstrap found locust[otel] there."""
    from tests.test_ssh_cycle import hosts_toml, warm_pids

    secret = "s3cr3t-" + secrets.token_hex(12)
    rec = Receiver(lab.bridge_ip)             # the hosts reach this machine on the bridge
    hs = emulated_hosts(3)
    master, *workers = hs.hosts
    hosts_toml(workdir, master, workers, hs.key_path, extra="otel = true\n")
    env = {**cli_env, **otel_vars(rec.endpoint, secret)}
    outputs = []
    try:
        for args in (("up", "master"), ("up", "workers", "-n", "2")):
            res = swarm(*args, cwd=workdir, env=env, timeout=120)
            outputs.append(res.out + res.err)
            assert res.code == 0, res.err
        names = {h.ip: h.exec("hostname", check=True).stdout.strip() for h in hs.hosts}
        for h in hs.hosts:
            log = (h.home / "swarm" / "bootstrap.log").read_text()
            assert "locust[otel] " in log and "already present" in log, log
        res, seen = run_watching_cmdlines(
            ("run", "-H", bridge_target.url, "-f", "viral_load.py", "--headless", "-u", "4",
             "-r", "4", "-t", "3s"), workdir, env, timeout=180)
        outputs.append(res.stdout + res.stderr)
        assert res.returncode == 0, res.stderr
        assert "2 of 2 worker process(es) connected" in res.stderr
        assert [c for _, c, _ in seen if secret in c] == []
        for h in hs.hosts:
            assert list((h.home / "swarm").glob(shell.ENV_FILE)) == [], h.ip
            for p in warm_pids(h):         # the warm Locust stays: it never holds the key
                assert secret.encode() not in Path(f"/proc/{p}/environ").read_bytes(), h.ip
            assert _files_holding(h.home / "swarm", secret.encode()) == [], h.ip
    finally:
        res = swarm("down", cwd=workdir, env=env, timeout=120)
        outputs.append(res.out + res.err)
        rec.close()
    assert res.code == 0, res.err

    assert {e.authorization for e in rec.exports} == {f"Bearer {secret}"}
    spans = rec.names_by("/v1/traces", "host.name")
    metrics = rec.names_by("/v1/metrics", "host.name")
    assert {h for h, n in spans.items() if any(x.startswith("GET /") for x in n)} == {
        names[w.ip] for w in workers}, spans
    assert {h for h, n in metrics.items() if "locust.users.count" in n} == {names[master.ip]}
    assert all(secret not in o for o in outputs)
    assert _files_holding(workdir.parent, secret.encode()) == []


def _venv_without_otel(tmp_path: Path) -> Path:
    """A venv with everything of this one but the OpenTelemetry packages (links, no copies):
    a controller that has Locust without its otel extra."""
    venv = tmp_path / "no-otel"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    mine = Path(next(p for p in sys.path if p.endswith("site-packages")))
    (theirs,) = venv.glob("lib/python3*/site-packages")
    for entry in mine.iterdir():
        if not entry.name.startswith("opentelemetry"):
            (theirs / entry.name).symlink_to(entry)
    return venv / "bin" / "python"


def test_otel_without_the_extra_on_this_machine_is_one_line_before_anything_starts(
        workdir, cli_env, local_toml, tmp_path):
    python = _venv_without_otel(tmp_path)
    local_toml("otel = true\n")
    for args in (("up", "master"), ("up", "workers", "-n", "1")):
        res = swarm(*args, cwd=workdir, env=cli_env)
        assert res.code == 0, res.err
    try:
        proc = subprocess.run([str(python), "-m", "swarm", "run", "-H", "http://127.0.0.1:9",
                               "-f", "viral_load.py", "--headless", "-t", "3s"], cwd=workdir,
                              env=cli_env, capture_output=True, text=True, timeout=60)
        assert_one_error_line(CLIResult(proc.returncode, proc.stdout, proc.stderr), 2,
                              "error: [locust] otel = true needs locust[otel] on this machine",
                              "opentelemetry-sdk", "pip install 'locust[otel]'")
        state = tmp_path / "state"
        assert list(state.rglob("locust.pid")) == [] and list(state.rglob("locustfiles")) == []
    finally:
        assert swarm("down", cwd=workdir, env=cli_env).code == 0


def test_bootstrap_installs_the_extra_where_the_locust_it_finds_lacks_it(tmp_path):
    """bootstrap.sh, run here on a PATH whose locust is the right version without the otel
    packages: kept as it is without extras; with SWARM_LOCUST_EXTRAS=otel passed over, and
    locust[otel] installed into a venv of the system Python from the otel wheelhouse
    (offline: the lab has no route out), which then has every package of the extra."""
    from tests.test_offline import prepared_cache

    (wheels,) = Path(prepared_cache(otel=True), "wheelhouse", f"locust-otel-{VERSION}").glob(
        "cp*-*")
    python = _venv_without_otel(tmp_path)
    path = tmp_path / "bin"
    path.mkdir()
    locust = path / "locust"
    locust.write_text(f"#!{python}\nimport sys\nfrom locust.main import main\nsys.exit(main())\n")
    locust.chmod(0o755)

    def bootstrap(extras: str) -> subprocess.CompletedProcess:
        env = {"PATH": f"{path}:/usr/bin:/bin", "SWARM_LOCUST_VERSION": VERSION,
               "SWARM_REMOTE_DIR": str(tmp_path / f"rd-{extras}"), "SWARM_SKIP_LIMITS": "1",
               "SWARM_OFFLINE": "1", "SWARM_WHEELHOUSE": str(wheels),
               "SWARM_LOCUST_EXTRAS": extras}
        return subprocess.run(["bash", str(REPO / "bootstrap" / "bootstrap.sh")], env=env,
                              capture_output=True, text=True, timeout=120)

    plain = bootstrap("")
    assert plain.returncode == 0, plain.stdout
    assert f"locust {VERSION} already present at {locust}; skipping install" in plain.stdout
    assert (tmp_path / "rd-" / "locust-path").read_text().strip() == str(locust)
    otel = bootstrap("otel")
    assert otel.returncode == 0, otel.stdout
    venv = tmp_path / "rd-otel" / "venv"
    assert f"locust {VERSION} at {locust} lacks the packages of its extras [otel]" in otel.stdout
    assert f"installing locust[otel]=={VERSION} from the wheelhouse at {wheels}" in otel.stdout
    assert f"installed locust {VERSION} at {venv}/bin/locust" in otel.stdout, otel.stdout
    assert (tmp_path / "rd-otel" / "locust-path").read_text().strip() == f"{venv}/bin/locust"
    sdk = subprocess.run([str(venv / "bin" / "python"), "-c", "import opentelemetry.sdk, "
                          "opentelemetry.exporter.otlp.proto.http, "
                          "opentelemetry.instrumentation.requests"], capture_output=True)
    assert sdk.returncode == 0, sdk.stderr
    again = bootstrap("otel")        # the venv's locust has the extra now: kept
    assert f"locust[otel] {VERSION} already present at {venv}/bin/locust" in again.stdout
    odd = bootstrap("otel;rm")
    assert "SWARM_LOCUST_EXTRAS must be extras' names (otel), got 'otel;rm'" in odd.stdout


def test_only_otel_variables_that_a_shell_can_export_pass():
    env = {"OTEL_SERVICE_NAME": "x", "OTEL_BAD-NAME": "y", "OTELX": "z", "AWS_SECRET": "s",
           "otel_lower": "w"}
    assert otel_env(env) == {"OTEL_SERVICE_NAME": "x"}


def test_a_missing_extra_is_named_from_the_metadata():
    """Read from this Python's installed metadata: otel is all here, qdrant's client is not."""
    assert missing_for_extra("otel") == []
    assert missing_for_extra("qdrant") == ["qdrant-client"]
    assert missing_for_extra("no-such-extra") == []


def test_the_otel_wheelhouse_is_cached_apart(tmp_path, monkeypatch):
    """A node holding the plain wheelhouse must be sent the otel one: another cache entry,
    another requirement (so another digest)."""
    from swarm.pipeline import wheelhouse
    from swarm.pipeline.session import locust_requirement

    monkeypatch.setenv("SWARM_CACHE_DIR", str(tmp_path))
    t = wheelhouse.Target("3.12", "x86_64", "glibc-2.39")
    assert wheelhouse.cached(VERSION, t, otel=True) == (
        tmp_path / "wheelhouse" / f"locust-otel-{VERSION}" / t.key)
    assert wheelhouse.cached(VERSION, t) == tmp_path / "wheelhouse" / f"locust-{VERSION}" / t.key
    assert locust_requirement(VERSION, True) == f"locust[otel]=={VERSION}"
    assert locust_requirement(VERSION, False) == f"locust=={VERSION}"
