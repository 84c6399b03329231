"""The demo: a built-in target (target.py) and the whole local cycle against it (cycle.py)."""
