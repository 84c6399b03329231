"""Where commands reach hosts: one Runner interface (base.py), the local and SSH transports,
the fan-out."""
