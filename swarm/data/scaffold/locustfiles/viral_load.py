"""A kandu went viral: lots of kids open the same few games and play them.

Reads dominate; plays are the main write and a few kids flag what they see.
"""

import random

from locust import HttpUser, between, task

import common

# Skewed towards kandu 1 (the viral one) so the hot key really is hot.
HOT_WEIGHTS = (10, 4, 2, 1, 1)
FLAG_REASONS = ("mean words", "scary", "spam", "copied my game")


def hot_kandu() -> int:
    return random.choices(common.SEED_KANDU_IDS, weights=HOT_WEIGHTS)[0]


class ViralViewer(HttpUser):
    wait_time = between(0.05, 0.3)

    @task(10)
    def view(self):
        self.client.get(f"/kandus/{hot_kandu()}", name="/kandus/[id]")

    @task(4)
    def play(self):
        self.client.post("/plays", json={"kandu_id": hot_kandu()}, name="/plays")

    @task(1)
    def flag(self):
        body = {"kandu_id": hot_kandu(), "reason": random.choice(FLAG_REASONS)}
        self.client.post("/flags", json=body, name="/flags")
