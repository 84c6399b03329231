"""Offline installs (`[bootstrap] offline = true`): a wheelhouse of Locust and all its
dependencies for a node's Python, made on this machine with its own pip, cached, and shipped
to each node that lacks it (ship_wheels.py), where bootstrap.sh installs from it with
`pip --no-index`. With
`[locust] otel = true` it is `locust[otel]`'s (the OpenTelemetry SDK and exporters too).

A wheelhouse is made for what the node's `bootstrap.sh --probe` reported (its Python's
version, machine, C library), so binary wheels match; it is cached under
`<cache>/wheelhouse/locust-<version>/<cp311-glibc-2.36-x86_64>/` (`locust-otel-<version>`
for locust[otel]) and made atomically (a
temporary directory renamed into place), so a cached one is always whole. `SWARM-WHEELHOUSE`
in it holds its digest: a node that already has that digest is not sent it again.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from swarm.config import Config
from swarm.errors import RemoteError, SwarmError, UsageError
from swarm.paths import cache_dir, default_bootstrap_dir
from swarm.pipeline.session import OTEL_EXTRA, locust_requirement

MANIFEST = "SWARM-WHEELHOUSE"  # the digest, then one `sha256 size name` line per wheel
PROBE_MARK = "swarm-probe "
BUILD_TIMEOUT = 900  # pip download of ~40 wheels; bounded, a hung index must not hang `up`
OLDEST_GLIBC = 17  # manylinux2014: the oldest glibc (2.17) wheels are still built for


@dataclass(frozen=True)
class Target:
    """What binary wheels must match on a node: its Python, machine and C library."""

    python: str  # "3.11"
    machine: str  # uname -m: "x86_64", "aarch64"
    libc: str  # "glibc-2.36", "musl-1.2.4"

    @property
    def key(self) -> str:
        return f"cp{self.python.replace('.', '')}-{self.libc}-{self.machine}"

    def platforms(self) -> list[str]:
        """pip's --platform tags the node accepts, newest first. pip expands manylinux2014 to
        2010 and 1 itself, but not the PEP 600 `manylinux_2_N` tags: listed one by one."""
        kind, _, version = self.libc.partition("-")
        parts = version.split(".")
        if kind not in ("glibc", "musl") or len(parts) < 2 or not all(p.isdigit() for p in parts):
            raise SwarmError(f"cannot tell the C library of the node (it said {self.libc!r})")
        major, minor = int(parts[0]), int(parts[1])
        arch = self.machine
        if kind == "musl":
            return [f"musllinux_{major}_{m}_{arch}" for m in range(minor, 0, -1)]
        if (major, minor) < (2, OLDEST_GLIBC):
            raise SwarmError(f"the node's glibc {version} is older than any wheel's (2.17)")
        return [f"manylinux_2_{m}_{arch}" for m in range(minor, OLDEST_GLIBC - 1, -1)] + [
            f"manylinux2014_{arch}"
        ]


@dataclass(frozen=True)
class NodeFacts:
    """What `bootstrap.sh --probe` said: the Python it would use, and the digest of the
    wheelhouse already on the node (None: none there)."""

    python: str
    target: Target
    shipped: str | None


def parse_probe(out: str) -> NodeFacts:
    for line in reversed(out.splitlines()):
        if line.startswith(PROBE_MARK):
            fields = dict(w.split("=", 1) for w in line[len(PROBE_MARK) :].split() if "=" in w)
            break
    else:
        raise RemoteError(
            "bootstrap.sh --probe printed no `swarm-probe` line: is bootstrap/bootstrap.sh "
            "older than offline mode? (`swarm init` in an empty directory writes the current one)"
        )
    try:
        target = Target(fields["version"], fields["machine"], fields["libc"])
    except KeyError:
        raise RemoteError(f"the node's Python could not be probed: {line.strip()}") from None
    shipped = fields.get("wheelhouse")
    return NodeFacts(fields.get("python", "?"), target, None if shipped == "none" else shipped)


def manifest(wheel_dir: Path) -> str:
    """The digest line, then `sha256 size name` for every wheel (sorted)."""
    rows = []
    for whl in sorted(wheel_dir.glob("*.whl")):
        digest = hashlib.sha256(whl.read_bytes()).hexdigest()
        rows.append(f"{digest} {whl.stat().st_size} {whl.name}")
    body = "\n".join(rows) + "\n"
    return hashlib.sha256(body.encode()).hexdigest() + "\n" + body


def _versions(version: str, otel: bool) -> Path:
    """The cached wheelhouses of one Locust (with its otel extra, or without), one per target."""
    name = f"locust-{OTEL_EXTRA}-{version}" if otel else f"locust-{version}"
    return cache_dir() / "wheelhouse" / name


def cached(version: str, target: Target, otel: bool = False) -> Path:
    return _versions(version, otel) / target.key


def pip_reason(output: str) -> str:
    """pip's own last word: its last `ERROR:` line, else its last line."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR:")]
    return (errors or lines or ["no output"])[-1]


def _pip_download(dest: Path, args: list[str], what: str) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-input"]
    cmd += ["-q", "--only-binary=:all:", "-d", str(dest), *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise SwarmError(f"{what}: pip download took more than {BUILD_TIMEOUT}s") from None
    except OSError as e:  # pragma: no cover - sys.executable always exists
        raise SwarmError(f"{what}: cannot run pip: {e}") from e
    if proc.returncode != 0:
        raise SwarmError(
            f"{what}: pip download failed: {pip_reason(proc.stderr + proc.stdout)} (this "
            "machine's pip needs its package index; or make a wheelhouse with `swarm "
            "wheelhouse` on a connected machine and name it in [bootstrap] wheelhouse)"
        )


def build(version: str, target: Target, otel: bool = False) -> tuple[Path, bool]:
    """The cached wheelhouse for target, made now if missing -> (its dir, made now?)."""
    final = cached(version, target, otel)
    if (final / MANIFEST).is_file():
        return final, False
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=final.parent))
    try:
        platforms = [a for p in target.platforms() for a in ("--platform", p)]
        _pip_download(
            tmp,
            [
                *["--implementation", "cp", "--python-version", target.python, *platforms],
                locust_requirement(version, otel),
                "pip",  # the venv is made --without-pip: bootstrap runs pip from its wheel
            ],
            f"cannot make the offline wheelhouse for {target.key}",
        )
        (tmp / MANIFEST).write_text(manifest(tmp))
        try:
            tmp.rename(final)
        except OSError:  # another swarm made it meanwhile: theirs is as good
            if not (final / MANIFEST).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final, True


def check(cfg: Config, version: str, script: Path) -> None:
    """Before anything is launched: can the nodes be installed as asked? The script knows
    offline mode and Locust's extras; offline, a configured wheelhouse has Locust and pip (and
    the OpenTelemetry SDK for otel), or this machine's pip can download (proved with Locust's
    own wheel when no wheelhouse of this version is cached)."""
    otel = cfg.locust.otel
    text = script.read_text(errors="replace")
    for asked, marker, key in (
        (cfg.bootstrap.offline, "SWARM_OFFLINE", "[bootstrap] offline = true"),
        (otel, "SWARM_LOCUST_EXTRAS", "[locust] otel = true"),
    ):
        if asked and marker not in text:
            raise UsageError(
                f"{script} predates {key} (it has no {marker}): "
                "copy swarm's current one (`swarm init` in an empty directory writes it)"
            )
    if not cfg.bootstrap.offline:
        return
    if cfg.bootstrap.wheelhouse:
        given = cfg.resolve(cfg.bootstrap.wheelhouse)
        patterns = [f"locust-{version}-*.whl", "pip-*.whl"]
        if otel:
            patterns.append("opentelemetry_sdk-*.whl")
        for pattern in patterns:
            if not any(given.glob(pattern)):
                flag = " --otel" if otel else ""
                raise UsageError(
                    f"[bootstrap] wheelhouse {given} has no {pattern}: make it with "
                    f"`swarm wheelhouse{flag}` ({locust_requirement(version, otel)} and pip, "
                    "for the nodes' Python)"
                )
        return
    if any(_versions(version, otel).glob(f"*/{MANIFEST}")):
        return
    with tempfile.TemporaryDirectory(prefix="swarm-pipcheck-") as tmp:
        _pip_download(
            Path(tmp),
            ["--no-deps", f"locust=={version}"],
            f"[bootstrap] offline = true: cannot get locust=={version} for the nodes' wheelhouse",
        )


KEY_RE = re.compile(r"^cp(\d)(\d+)-((?:glibc|musl)-[\d.]+)-(\w+)$")


def parse_target(key: str) -> Target:
    """A key as swarm prints it (`cp312-glibc-2.39-x86_64`) -> its Target."""
    m = KEY_RE.match(key)
    if not m:
        raise UsageError(
            f"--for must look like cp312-glibc-2.39-x86_64 (Python, C library, machine: "
            f"what `swarm up` printed for the node), got {key!r}"
        )
    target = Target(f"{m[1]}.{m[2]}", m[4], m[3])
    target.platforms()  # a libc it cannot read is refused now
    return target


def this_machine(version: str) -> Target:
    """This machine's target, found as on a node: bootstrap.sh --probe, run here."""
    script = default_bootstrap_dir() / "bootstrap.sh"
    with tempfile.TemporaryDirectory(prefix="swarm-probe-") as tmp:
        env = {**os.environ, "SWARM_LOCUST_VERSION": version, "SWARM_OFFLINE": "1"}
        proc = subprocess.run(
            ["bash", str(script), "--probe"],
            capture_output=True,
            text=True,
            timeout=120,
            env={**env, "SWARM_REMOTE_DIR": tmp},
        )
    if proc.returncode != 0:
        reason = proc.stdout.strip().splitlines()[-1:] or [proc.stderr.strip()]
        raise SwarmError(f"this machine cannot be probed: {reason[0]}")
    return parse_probe(proc.stdout).target
