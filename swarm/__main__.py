from swarm.cli.main import entry

entry()
