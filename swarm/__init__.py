"""swarm: run distributed Locust load tests on EC2, SSH hosts, or local processes."""

__version__ = "0.1.0"
