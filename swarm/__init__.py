"""swarm: run distributed Locust load tests on EC2, SSH hosts, or local processes."""

__version__ = "0.1.0"  # pyproject.toml reads it from here
# The name to pip install: `swarm` on PyPI is another project (a 2018 game), and so is
# `locust-swarm`. The command and the import package stay `swarm`.
DISTRIBUTION = "swarm-locust-ec2"
