"""The house: swarm's layers import one way, with no circle, and only the CLI prints.

Read from the source (ast), so lazy imports inside functions count too; imports under
`if TYPE_CHECKING:` are annotations only and are left out of the circle check.
"""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

PKG = REPO / "swarm"

# Lower layers never import higher ones. Packages of one rank never import each other.
RANK = {
    "swarm": 0, "swarm.errors": 0, "swarm.models": 0, "swarm.paths": 0,
    "swarm.config": 1,
    "swarm.remote": 2, "swarm.locust": 2,
    "swarm.providers": 3,
    "swarm.pipeline": 4,
    "swarm.demo": 5, "swarm.api": 5,
    "swarm.cli": 6,
    "swarm.__main__": 7,
}
# Beyond rank: what a layer must not know about.
FORBIDDEN = {
    "swarm.providers": {"swarm.locust"},      # clouds know nothing of Locust
}
# The one import against the flow: the package's face, `swarm.Stack`, from a module-level
# __getattr__ that runs only once swarm is imported (so no circle at import time either).
FACADE = {("swarm", "swarm.api")}
# Third-party packages kept to the one place that needs them.
ONLY_IN = {
    "rich": ("swarm.cli",),
    "click": ("swarm.cli",),
    # where commands reach hosts: swarm/remote/__init__ imports it first (without invoke),
    # sshconfig hands invoke back to its ssh_config parser
    "paramiko": ("swarm.remote",),
    "fabric": ("swarm.remote.sshconfig",),
    "boto3": ("swarm.providers.ec2",),
    "botocore": ("swarm.providers.ec2",),
    "wsproto": ("swarm.demo.ws",),
    "plotly": ("swarm.cli.html",),
}
# Programs of their own: the warm Locust runs on hosts (stdlib + Locust), the target is
# started as `python -m swarm.demo.target`; they may print, and warm_host imports no swarm.
STANDALONE = {"swarm.locust.warm_host", "swarm.locust.final_stats", "swarm.demo.target"}
SHIPPED = {"swarm.locust.warm_host", "swarm.locust.final_stats"}  # run on the nodes


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                lines.update(range(inner.lineno, (inner.end_lineno or inner.lineno) + 1))
    return lines


def imports_of(path: Path) -> list[tuple[str, bool]]:
    """(imported module, at run time?) for every import in the file; `from X import y` counts
    as X.y when X.y is a module of swarm, else X."""
    name = module_name(path)
    tree = ast.parse(path.read_text(), filename=str(path))
    typing_only = _type_checking_lines(tree)
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(tree):
        runtime = getattr(node, "lineno", 0) not in typing_only
        if isinstance(node, ast.Import):
            out += [(a.name, runtime) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join([*parts, base]).strip(".")
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.append((sub if _is_module(sub) else base, runtime))
    return out


def _is_module(name: str) -> bool:
    p = REPO.joinpath(*name.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def layer_of(name: str) -> str:
    return max((k for k in RANK if name == k or name.startswith(k + ".")), key=len)


# swarm/data/scaffold holds users' locustfiles (what `swarm init` writes), not swarm's code
CODE = sorted(p for p in PKG.rglob("*.py") if "data" not in p.relative_to(PKG).parts)
MODULES = {module_name(p): p for p in CODE}


def test_every_module_has_a_layer():
    assert {layer_of(m) for m in MODULES} == set(RANK)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_flow_one_way(name):
    me = layer_of(name)
    bad = []
    for target, _ in imports_of(MODULES[name]):
        top = target.split(".")[0]
        if name in SHIPPED and top == "swarm":
            bad.append(f"{target} ({name} runs on hosts: no swarm imports)")
        for lib, allowed in ONLY_IN.items():
            if top == lib and not any(name == a or name.startswith(a + ".") for a in allowed):
                bad.append(f"{target} (only {', '.join(allowed)} may import {lib})")
        if top != "swarm" or (name, target) in FACADE:
            continue
        them = layer_of(target)
        if them == me:
            continue
        if RANK[them] > RANK[me]:
            bad.append(f"{target} (upward: {me} is below {them})")
        elif RANK[them] == RANK[me] and RANK[me] > 0:     # the base modules share one floor
            bad.append(f"{target} (sideways: {me} and {them} are one layer)")
        if any(them == f or them.startswith(f + ".") for f in FORBIDDEN.get(me, ())):
            bad.append(f"{target} ({me} must not know {them})")
    assert not bad, f"{name} imports: " + "; ".join(bad)


# Inside remote/: the transports stand on base.py (Runner, Result, the tar helpers) and never
# on each other; base.py and the helpers beside it name no transport. Who builds a runner
# (a provider) imports its transport directly.
REMOTE_BASE = "swarm.remote.base"
TRANSPORTS = {"swarm.remote.ssh", "swarm.remote.local"}


def remote_inward(modules: dict[str, Path]) -> list[str]:
    """Every import inside swarm.remote that points at a transport."""
    bad = []
    for name, path in modules.items():
        if layer_of(name) != "swarm.remote":
            continue
        for target, _ in imports_of(path):
            if target in TRANSPORTS and target != name:
                bad.append(f"{name} imports {target} (only providers name a transport)")
    return bad


def test_remote_transports_stand_on_base():
    assert not remote_inward(MODULES), "; ".join(remote_inward(MODULES))
    for transport in TRANSPORTS:
        targets = {t for t, _ in imports_of(MODULES[transport])}
        assert REMOTE_BASE in targets, f"{transport} does not build on {REMOTE_BASE}"


def test_the_remote_check_can_fail(tmp_path, monkeypatch):
    """A base that names a transport (the old remote.py importing SSHRunner) is caught."""
    fake = tmp_path / "swarm" / "remote"
    fake.mkdir(parents=True)
    (fake.parent / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    (fake / "base.py").write_text("def runner():\n    from swarm.remote.ssh import SSHRunner\n")
    (fake / "ssh.py").write_text("from swarm.remote.base import Runner\n")
    (fake / "local.py").write_text("from swarm.remote import base\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    mods = {module_name(p): p for p in fake.rglob("*.py")}
    assert remote_inward(mods) == [
        "swarm.remote.base imports swarm.remote.ssh (only providers name a transport)"
    ]
    (fake / "base.py").write_text("import swarm.remote.local\n")
    assert remote_inward(mods) == [
        "swarm.remote.base imports swarm.remote.local (only providers name a transport)"
    ]


def circles(modules: dict[str, Path]) -> list[list[str]]:
    """Every import circle among run-time imports (function-level ones included)."""
    graph = {}
    for name, path in modules.items():
        deps = {t for t, runtime in imports_of(path)
                if runtime and t in modules and t != name and (name, t) not in FACADE}
        graph[name] = deps
    found: list[list[str]] = []
    state: dict[str, int] = {}       # 1: on the current path, 2: done

    def visit(n: str, path: list[str]) -> None:
        state[n] = 1
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                found.append(path[path.index(m):] + [m])
            elif m not in state:
                visit(m, path + [m])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
    return found


def test_no_import_circle():
    found = circles(MODULES)
    assert not found, "import circles: " + "; ".join(" -> ".join(c) for c in found)


def _prints(tree: ast.Module) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = ast.unparse(node.func)
        if f == "print" or f in ("sys.stdout.write", "sys.stderr.write", "click.echo"):
            lines.append(node.lineno)
    return lines


@pytest.mark.parametrize("name", sorted(m for m in MODULES if layer_of(m) != "swarm.cli"
                                        and m not in STANDALONE))
def test_only_the_cli_prints(name):
    lines = _prints(ast.parse(MODULES[name].read_text()))
    assert not lines, f"{name} prints at line(s) {lines}: report through the Reporter instead"


def test_the_checks_can_fail(tmp_path, monkeypatch):
    """The walkers see a lazy upward import, a circle, and a print."""
    fake = tmp_path / "swarm"
    for pkg in ("", "providers", "pipeline"):
        (fake / pkg).mkdir(parents=True, exist_ok=True)
        (fake / pkg / "__init__.py").write_text("")
    (fake / "providers" / "x.py").write_text("def f():\n    from swarm.pipeline import run\n")
    (fake / "pipeline" / "run.py").write_text("import swarm.providers.x\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert imports_of(fake / "providers" / "x.py") == [("swarm.pipeline.run", True)]
    assert RANK[layer_of("swarm.pipeline.run")] > RANK[layer_of("swarm.providers.x")]
    mods = {module_name(p): p for p in fake.rglob("*.py")}
    assert circles(mods) == [["swarm.pipeline.run", "swarm.providers.x", "swarm.pipeline.run"]]
    (fake / "providers" / "x.py").write_text("def f():\n    pass\n")
    assert circles(mods) == []
    assert _prints(ast.parse("import sys\nsys.stdout.write('x')\nprint(1)\n")) == [2, 3]


def test_the_design_doc_names_every_module():
    """docs/design.md's layout is the tree: every module is named there, and every `x.py` it
    names under swarm/ exists."""
    text = (REPO / "docs" / "design.md").read_text()
    layout = text.split("## The layers", 1)[1].split("\n## ", 1)[0]
    files = {p.name for p in CODE if p.name != "__init__.py"}
    missing = sorted(f for f in files if f not in layout)
    assert not missing, f"docs/design.md does not name {missing}"
    tree = "\n".join(line for line in layout.splitlines() if line.startswith("    "))
    named = set(re.findall(r"\b([a-z_]+\.py)\b", tree))
    assert named <= files, f"docs/design.md names {sorted(named - files)}, not in swarm/"
