"""Locust, pure: its command lines, the shell that drives it on a node, and parsers of what it says."""
