#!/usr/bin/env python3
"""Break swarm on purpose and show that the tests catch it (issue 15, item 9).

    python tests/mutations.py [--list] [--no-baseline] [-v] [NAME ...]

For each break: a copy of this checkout as it is (tracked and untracked files, uncommitted
changes included; nothing in the checkout is touched) in a temporary directory, the break
applied there as a small textual patch (an error, naming the file, if the patch no longer
applies), then ONLY the tests that must catch it, run from the copy inside the lab
(tests/run_in_lab.py). A break is CAUGHT when one of those tests fails and MISSED when they
pass; a test that could not run (an error in setup or collection, no tests) is an ERROR,
never a catch. First, unless --no-baseline, the same tests run on an unbroken copy: they
must pass, or a "catch" would mean nothing. Exit 0 only if every break was caught.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
RUN_TIMEOUT_S = 1800       # one mutation's tests, bounded (run_in_lab kills what is left)


@dataclass(frozen=True)
class Hunk:
    path: str      # relative to the checkout
    old: str       # must occur exactly once
    new: str


@dataclass(frozen=True)
class Mutation:
    name: str
    what: str
    hunks: tuple[Hunk, ...]
    tests: tuple[str, ...]             # pytest node ids: the tests that must catch it


MUTATIONS: tuple[Mutation, ...] = (
    Mutation(
        "drop-client-token",
        "RunInstances without swarm's ClientToken (botocore fills in a new one per call)",
        (Hunk("swarm/providers/ec2/launch.py",
              "lambda: ec2.run_instances(ClientToken=token, **params),",
              "lambda: ec2.run_instances(**params),"),),
        ("tests/test_aws_idempotency.py::test_up_with_the_launch_answers_lost_launches_once"
         "[reset-swarm]",),
    ),
    Mutation(
        "ssh-open-to-10/8",
        "the security group opens SSH (22) to 10.0.0.0/8 instead of [ec2] ssh_cidr",
        (Hunk("swarm/providers/ec2/setup.py",
              'want |= {("tcp", 22, 22, "cidr", c) for c in ssh_from.cidrs}',
              'want |= {("tcp", 22, 22, "cidr", "10.0.0.0/8") for c in ssh_from.cidrs}'),),
        ("tests/test_exposure.py::test_exposure_audit",),
    ),
    Mutation(
        "secret-to-workers",
        "every worker's Locust started with AWS_SECRET_ACCESS_KEY exported",
        (Hunk("swarm/pipeline/launch.py",
              "            return start_cmd(rd, self.worker_argv, warm=self.warm, env=has_env)",
              "            return \"export AWS_SECRET_ACCESS_KEY='%s'; \" % __import__('os')"
              ".environ.get('AWS_SECRET_ACCESS_KEY', '') + start_cmd(\n"
              "                rd, self.worker_argv, warm=False, env=has_env\n"
              "            )"),),
        ("tests/test_secrets.py",),
    ),
    Mutation(
        "no-group-self-rule",
        "the security group loses its self rule (Locust 5557-5558 from the group itself)",
        (Hunk("swarm/providers/ec2/setup.py",
              'want = {("tcp", locust_ports[0], locust_ports[1], "group", gid)}',
              "want = set()"),),
        ("tests/test_exposure.py::test_exposure_audit",
         "tests/test_aws_quirks.py::test_the_headline_flow_twice_on_the_quirky_cloud"),
    ),
    Mutation(
        "ssm-opens-ssh",
        'connect = "ssm" still opens SSH (22), to the VPC\'s range',
        (Hunk("swarm/providers/ec2/checks.py",
              "                self._sources = setup.SshFrom()\n",
              '                self._sources = setup.SshFrom(("10.77.0.0/16",))\n'),),
        ("tests/test_ssm.py::test_ssm_headless_flow_with_no_port_22_rule",),
    ),
    Mutation(
        "accept-unknown-host-keys",
        "paramiko's AutoAddPolicy instead of pinning the key on first contact",
        (Hunk("swarm/remote/hops.py",
              "client.set_missing_host_key_policy(PinOnFirstContact(known))",
              "client.set_missing_host_key_policy(paramiko.AutoAddPolicy())"),),
        ("tests/test_ssh_cycle.py::test_a_changed_host_key_is_refused",
         "tests/test_aws_quirks.py::test_instances_run_before_their_sshd_answers"),
    ),
    Mutation(
        "stats-from-last-csv",
        "the master's stats CSV left as Locust last wrote it (once a second), not rewritten "
        "from the final figures at exit",
        (Hunk("swarm/locust/final_stats.py",
              "            if prefix:\n                write_csv_files(environment, prefix)",
              "            if prefix:\n                pass"),),
        ("tests/test_final_stats.py",),
    ),
)


class PatchError(RuntimeError):
    pass


@dataclass
class Outcome:
    mutation: Mutation
    result: str            # CAUGHT, MISSED, ERROR
    seconds: float
    detail: str = ""
    tail: list[str] = field(default_factory=list)


def copy_checkout(dest: Path) -> None:
    """The checkout's files as they are now, without what git ignores (.venv, results)."""
    out = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others",
                          "--exclude-standard"], capture_output=True, check=True, timeout=60)
    for rel in filter(None, out.stdout.decode().split("\0")):
        src, target = REPO / rel, dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():           # locustfiles/, bootstrap/: links into swarm/data
            os.symlink(os.readlink(src), target)
        elif src.is_file():            # (not: deleted in the working tree)
            shutil.copy2(src, target)


def apply(mutation: Mutation, root: Path) -> None:
    for hunk in mutation.hunks:
        path = root / hunk.path
        text = path.read_text(encoding="utf-8")
        found = text.count(hunk.old)
        if found != 1:
            raise PatchError(f"{mutation.name}: the patch no longer applies to {hunk.path} "
                             f"(its text is found {found} times, not once): update "
                             "tests/mutations.py")
        path.write_text(text.replace(hunk.old, hunk.new), encoding="utf-8")


@dataclass(frozen=True)
class Ran:
    code: int          # pytest's exit code
    failed: int        # tests that failed (an assertion): what catches a break
    errors: int        # tests that could not run (setup, collection): never a catch
    tail: list[str]


def counts(report: Path) -> tuple[int, int]:
    """(failed, errors) from pytest's JUnit XML report; (0, 1) when there is none."""
    import xml.etree.ElementTree as ET

    try:
        suites = ET.parse(report).getroot().iter("testsuite")
    except (OSError, ET.ParseError):
        return 0, 1
    failed = errors = 0
    for s in suites:
        failed += int(s.get("failures", 0))
        errors += int(s.get("errors", 0))
    return failed, errors


def run_tests(root: Path, tests: tuple[str, ...]) -> Ran:
    """pytest on `tests` from the copy at `root`, in the lab."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(root)      # the copy's swarm, not the checkout's editable install
    which = subprocess.run([PYTHON, "-c", "import swarm; print(swarm.__file__)"], cwd=root,
                           env=env, capture_output=True, text=True, timeout=60)
    if not which.stdout.strip().startswith(str(root)):
        raise PatchError(f"the copy's tests would import swarm from {which.stdout.strip()!r}, "
                         f"not from {root}")
    report = root / "mutation-report.xml"
    cmd = [PYTHON, "tests/run_in_lab.py", "--timeout", str(RUN_TIMEOUT_S), "--", PYTHON, "-m",
           "pytest", "-q", "-x", "-p", "no:cacheprovider", f"--junitxml={report}", *tests]
    try:
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True,
                              timeout=RUN_TIMEOUT_S + 120)
    except subprocess.TimeoutExpired:
        return Ran(124, 0, 1, [f"still running after {RUN_TIMEOUT_S + 120}s"])
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines()
             if ln.strip() and "werkzeug" not in ln]
    return Ran(proc.returncode, *counts(report), lines[-15:])


def in_copy(fn, mutation: Mutation | None):
    root = Path(tempfile.mkdtemp(prefix="swarm-mutation-"))
    try:
        copy_checkout(root)
        if mutation is not None:
            apply(mutation, root)
        return fn(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def mutate(mutation: Mutation) -> Outcome:
    began = time.monotonic()
    try:
        ran = in_copy(lambda root: run_tests(root, mutation.tests), mutation)
    except PatchError as exc:
        return Outcome(mutation, "ERROR", time.monotonic() - began, str(exc))
    took = time.monotonic() - began
    if ran.code == 1 and ran.failed and not ran.errors:
        return Outcome(mutation, "CAUGHT", took, tail=ran.tail)
    if ran.code == 0:
        return Outcome(mutation, "MISSED", took, "", ran.tail)
    return Outcome(mutation, "ERROR", took,
                   f"pytest exited {ran.code}: {ran.failed} failed, {ran.errors} errors", ran.tail)


def span(seconds: float) -> str:
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("names", nargs="*", help="only these breaks (default: all)")
    parser.add_argument("--list", action="store_true", help="list the breaks and their tests")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="print the end of pytest's output for every break")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip running the tests on an unbroken copy first")
    args = parser.parse_args(argv)
    known = {m.name: m for m in MUTATIONS}
    unknown = [n for n in args.names if n not in known]
    if unknown:
        print(f"error: unknown break(s) {', '.join(unknown)}: see --list", file=sys.stderr)
        return 2
    chosen = [known[n] for n in args.names] or list(MUTATIONS)
    if args.list:
        for m in chosen:
            print(f"{m.name}: {m.what}\n  caught by: {' '.join(m.tests)}")
        return 0
    began = time.monotonic()
    if not args.no_baseline:
        tests = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
        print(f"baseline: {len(tests)} test(s) on an unbroken copy ...", flush=True)
        ran = in_copy(lambda root: run_tests(root, tests), None)
        print(f"baseline: pytest exited {ran.code} in {span(time.monotonic() - began)}",
              flush=True)
        if ran.code != 0:
            print("\n".join(ran.tail), file=sys.stderr)
            print("error: the tests fail without any break: fix them first", file=sys.stderr)
            return 2
    outcomes = []
    for m in chosen:
        print(f"{m.name}: {m.what} ...", flush=True)
        o = mutate(m)
        outcomes.append(o)
        print(f"{m.name}: {o.result} in {span(o.seconds)}"
              + (f" ({o.detail})" if o.detail else ""), flush=True)
        if (o.result == "ERROR" or args.verbose) and o.tail:
            print("    " + "\n    ".join(o.tail), flush=True)
    caught = sum(o.result == "CAUGHT" for o in outcomes)
    print()
    for o in outcomes:
        print(f"{o.result:<7} {span(o.seconds):>7}  {o.mutation.name:<26} "
              f"{' '.join(o.mutation.tests)}")
    print(f"total: {caught} of {len(outcomes)} breaks caught in {span(time.monotonic() - began)}")
    return 0 if caught == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
