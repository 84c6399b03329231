"""What this machine holds where a host writing outside its own root would leave a trace:
every name under /etc, /usr, /opt and /var/lib with its type and mode, owner, size and mtime
(``snapshot``), and what changed between two snapshots (``changes``).

``python -m tests.emulation.snapshot proof DIR`` is the proof that the check can fail, run by
tests/test_machine_untouched.py inside ``unshare --mount --propagation private``: there /etc is
a throw-away overlay (upper dir in DIR), so a host made without a root of its own
(``own_root=False``) can write /etc/... without touching this machine's. It prints, as JSON,
what ``changes`` found between a snapshot before and after that host and a normal one wrote.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

TOPS = ("/etc", "/usr", "/opt", "/var/lib")
# Nothing under TOPS is left out: on these machines nothing there changed while the suite ran
# (two snapshots around the whole EC2 flow, and 15 minutes apart with other suites running,
# were equal). A path that does change on its own goes here, with why.
EXCLUDED: tuple[str, ...] = ()
LEAK = "/etc/swarm-snapshot-leak"  # what the shared-root host writes in the proof
KEPT = "/etc/swarm-snapshot-kept"  # what the own-root host writes there

Entry = tuple[int, int, int, int, int]  # mode (with the type), uid, gid, size, mtime (ns)


def snapshot(tops: tuple[str, ...] = TOPS,
             excluded: tuple[str, ...] = EXCLUDED) -> dict[str, Entry]:
    """path -> what it is, for every path under ``tops`` (symlinks not followed)."""
    out: dict[str, Entry] = {}

    def add(path: str) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:   # gone between listing and looking: it changed; the
            return                  # other snapshot has it, or neither does
        out[path] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns)

    for top in tops:
        add(top)
        for dirpath, dirnames, filenames in os.walk(top, onerror=_raise):
            dirnames[:] = [d for d in dirnames
                           if os.path.join(dirpath, d) not in excluded]
            for name in dirnames + filenames:
                path = os.path.join(dirpath, name)
                if path not in excluded:
                    add(path)
    return out


def _raise(err: OSError) -> None:
    if not isinstance(err, FileNotFoundError):
        raise err


def changes(before: dict[str, Entry], after: dict[str, Entry]) -> list[str]:
    """One line per path added (+), removed (-) or changed (~, with what), sorted."""
    fields = ("mode", "uid", "gid", "size", "mtime")
    lines = [f"+ {p}" for p in after.keys() - before.keys()]
    lines += [f"- {p}" for p in before.keys() - after.keys()]
    for path in before.keys() & after.keys():
        a, b = before[path], after[path]
        if a != b:
            what = ", ".join(f"{f} {x}->{y}"
                             for f, x, y in zip(fields, a, b, strict=True) if x != y)
            lines.append(f"~ {path} ({what})")
    return sorted(lines, key=lambda line: line[2:])


def _proof(work: Path) -> dict:
    """In a private mount namespace: /etc becomes an overlay whose writes go to ``work``; a
    shared-root host and an own-root host each write a file in /etc between two snapshots."""
    from .lab import Lab

    mine, parents = (os.readlink(f"/proc/{pid}/ns/mnt") for pid in ("self", os.getppid()))
    if mine == parents:
        raise SystemExit("the proof overlays /etc: run it in a mount namespace of its own")
    upper, scratch = work / "etc-upper", work / "etc-work"
    for d in (upper, scratch):
        d.mkdir()
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir=/etc,upperdir={upper},workdir={scratch}", "/etc"], check=True)
    with Lab("10.77.8.0/24", base_dir=work) as lab:
        shared = lab.add_host(None, "", own_root=False)
        own = lab.add_host(None, "")
        before = snapshot()
        for host, path in ((shared, LEAK), (own, KEPT)):
            host.exec(f"echo written by {host.name} >{path}", check=True)
        after = snapshot()
        return {"changes": changes(before, after),
                "leak_in_throwaway_etc": (upper / Path(LEAK).name).is_file(),
                "kept_in_own_layer": (own.layer / KEPT.lstrip("/")).is_file()}


if __name__ == "__main__":
    if sys.argv[1:2] != ["proof"] or len(sys.argv) != 3:
        sys.exit("usage: python -m tests.emulation.snapshot proof DIR")
    print(json.dumps(_proof(Path(sys.argv[2]))))
