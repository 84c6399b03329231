"""The CLI: the only layer that prints or renders, and the one error boundary (main.py)."""
