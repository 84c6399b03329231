"""Where commands reach hosts: one Runner interface (base.py), local and SSH transports, the fan-out."""
