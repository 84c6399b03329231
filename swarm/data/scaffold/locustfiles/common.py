"""Helpers shared by the Kandu locustfiles.

Imported as a plain neighbour module (`import common`): Locust puts the
locustfile's directory on sys.path, and this directory is shipped as-is to
every load generator, so it must not need to be a package.
"""

import random
import uuid

# The target seeds these kandus at start-up, so they exist on any fresh target.
SEED_KANDU_IDS = (1, 2, 3, 4, 5)

ASSET_NAMES = ("sprite-cat.png", "sprite-dog.png", "bg-forest.png", "jump.wav", "theme.mp3")

BLOCK_KINDS = ("when_flag_clicked", "move", "turn", "say", "repeat", "play_sound")


def unique_username() -> str:
    # Random rather than a counter: many workers on many hosts share one target.
    return f"kid-{uuid.uuid4().hex}"


def register(client) -> str | None:
    """Sign a new user up and return their token (None if signup failed)."""
    payload = {"username": unique_username(), "password": uuid.uuid4().hex}
    with client.post("/meta/register", json=payload, name="/meta/register", catch_response=True) as resp:
        token = None
        if resp.status_code == 201:
            try:
                token = resp.json().get("token")
            except ValueError:
                pass
        if token:
            resp.success()
        else:
            resp.failure(f"signup returned {resp.status_code} without a token")
        return token


def auth_headers(token: str | None) -> dict:
    return {"Authorization": f"Bearer {token}"} if token else {}


def random_kandu() -> dict:
    blocks = [{"type": random.choice(BLOCK_KINDS), "arg": random.randint(1, 10)} for _ in range(random.randint(3, 12))]
    return {"title": f"My game {random.randint(1, 9999)}", "blocks": blocks}
