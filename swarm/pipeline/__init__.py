"""The order of steps: bring a stack up and down (fleet), and a run from plan to record."""
