"""Locust, pure: its command lines, the shell that drives it on a node, and the parsers of
what it says."""
