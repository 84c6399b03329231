"""Where commands reach hosts: one Runner interface (base.py), the local and SSH transports,
the fan-out."""

import sys

# paramiko's ssh_config parser imports invoke, for `Match exec` only; invoke brings PyYAML,
# asyncio and unittest along: 50 ms of the 130 that importing paramiko costs every command.
# swarm reads ssh_config files through fabric (sshconfig.py), which imports invoke itself and
# hands it to that parser then. So paramiko is imported here, first, without it.
if "paramiko" not in sys.modules and "invoke" not in sys.modules:
    sys.modules["invoke"] = None  # type: ignore[assignment]  # `import invoke` fails at once
    try:
        import paramiko  # noqa: F401
    finally:
        del sys.modules["invoke"]
