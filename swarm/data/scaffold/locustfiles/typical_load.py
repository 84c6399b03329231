"""An ordinary afternoon: kids sign up, build games, play and browse.

Each simulated kid registers once and keeps its token for the session.
"""

import random

from locust import HttpUser, between, task

import common


class TypicalKid(HttpUser):
    wait_time = between(0.05, 0.3)

    def on_start(self):
        self.token = common.register(self.client)
        self.my_kandus = []

    @task(2)
    def save_kandu(self):
        resp = self.client.post(
            "/kandus", json=common.random_kandu(), headers=common.auth_headers(self.token), name="/kandus"
        )
        if resp.status_code == 201:
            self.my_kandus.append(resp.json()["id"])

    @task(4)
    def play(self):
        # Mostly other kids' (seeded) games, sometimes your own.
        pool = list(common.SEED_KANDU_IDS) + self.my_kandus[-5:]
        self.client.post("/plays", json={"kandu_id": random.choice(pool)}, name="/plays")

    @task(4)
    def fetch_kandu(self):
        self.client.get(f"/kandus/{random.choice(common.SEED_KANDU_IDS)}", name="/kandus/[id]")

    @task(3)
    def fetch_asset(self):
        self.client.get(f"/assets/{random.choice(common.ASSET_NAMES)}", name="/assets/[name]")
