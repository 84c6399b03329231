"""Run a command and write its rusage (peak RSS, CPU) as JSON: `python -I -S _rusage.py OUT -- CMD...`

Why a launcher: Linux keeps a process' peak RSS across fork + exec, so a command forked straight
from the bench (a big process: moto runs in it) would report the bench's RSS as its own. This
launcher is small (~10 MB), so the peak RSS of what it forks is the command's own.
"""
import json
import os
import sys
import time


def main() -> int:
    out, sep, *cmd = sys.argv[1:]
    if sep != "--" or not cmd:
        print("usage: _rusage.py OUT -- CMD...", file=sys.stderr)
        return 2
    t0w, t0 = time.time(), time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(cmd[0], cmd)
        finally:
            os._exit(127)
    _, status, ru = os.wait4(pid, 0)
    wall = time.monotonic() - t0
    with open(out, "w") as fh:
        json.dump({"maxrss_kib": ru.ru_maxrss, "utime": ru.ru_utime, "stime": ru.ru_stime,
                   "t0": t0w, "wall": wall}, fh)
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
