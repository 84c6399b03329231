"""Run swarm under pyinstrument: `python _profiled.py OUT.txt ARGS...` (bench --profile pyinstrument).

`pyinstrument -m swarm` writes its report after the module returns, and swarm never returns:
its entry point ends the process with os._exit once the exit handlers have run. So the report
is written from an exit handler here.
"""
import atexit
import runpy
import sys

from pyinstrument import Profiler


def main() -> None:
    out, *args = sys.argv[1:]
    sys.argv = ["swarm", *args]
    profiler = Profiler()

    def report() -> None:
        profiler.stop()
        with open(out, "w") as fh:
            fh.write(profiler.output_text(unicode=True, show_all=True))

    atexit.register(report)
    profiler.start()
    runpy.run_module("swarm", run_name="__main__")


if __name__ == "__main__":
    main()
