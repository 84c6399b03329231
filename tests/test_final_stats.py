"""The stats a run reports are Locust's final figures, however long ago Locust last wrote its
stats CSV.

Locust's master rewrites `<prefix>_stats.csv` once a second and does not write it again at
exit, so the file can miss what the workers reported in the last second. How much it misses
is a race (tests/test_truthful.py runs into it only by luck); here the race is lost on
purpose: the locustfile makes Locust's writer wait an hour between writes, so it writes once,
at the start, with nothing in it. Every figure the run reports must then come from swarm's
final_stats plugin, which writes the CSV files again from the final figures when Locust quits.
"""
from __future__ import annotations

import json

from tests.helpers import swarm

USERS = 5

SLOW_CSV = '''"""Locust's CSV writer writes once, at the start (the race of its last write lost)."""
import locust.stats
from locust import HttpUser, constant, task

locust.stats.CSV_STATS_INTERVAL_SEC = 3600


class Reader(HttpUser):
    wait_time = constant(0.05)

    @task
    def health(self):
        self.client.get("/health")
'''


def test_the_reported_figures_are_the_final_ones_not_the_csv_locust_last_wrote(
        workdir, cli_env, local_toml, target):
    local_toml(name="final")
    (workdir / "locustfiles" / "slow_csv.py").write_text(SLOW_CSV)
    assert swarm("up", "master", cwd=workdir, env=cli_env, timeout=120).code == 0
    try:
        assert swarm("up", "workers", "-n", "2", cwd=workdir, env=cli_env, timeout=120).code == 0
        res = swarm("run", "-H", target.url, "-f", "slow_csv.py", "--headless", "-u", str(USERS),
                    "-r", str(USERS), "-t", "3s", cwd=workdir, env=cli_env, timeout=180)
        served = target.total()
        assert res.code == 0, res.err
        out = sorted((workdir / "results" / "final").iterdir())[-1]
        summary = json.loads((out / "run.json").read_text())["summary"]
        reported = summary["total"]["requests"]
        in_json = sum(e["num_requests"] for e in json.loads((out / "stats.json").read_text()))
        # at most one request in flight per user is cut off at stop
        assert served - USERS <= reported <= served, (reported, served)
        assert reported == in_json and served > 50, (reported, in_json, served)
        # the per-name rows too (Locust's own --json-file write would zero them)
        [health] = json.loads((out / "run.json").read_text())["summary"]["endpoints"]
        assert (health["name"], health["requests"]) == ("/health", reported), health
        assert health["p95_ms"] > 0
    finally:
        assert swarm("down", cwd=workdir, env=cli_env, timeout=120).code == 0
