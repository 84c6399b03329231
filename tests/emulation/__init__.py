"""Offline test harness: moto as EC2, one network namespace + real sshd per
emulated host, a lab namespace with no route out, and an in-process socket
guard.  See tests/emulation/plugin.py for the pytest fixtures and
/work/shared/TESTING.md for the measured recipe."""

from .guard import install_guard
from .host import Host
from .lab import Lab
from .proc import LabError

__all__ = ["Host", "Lab", "LabError", "install_guard"]
