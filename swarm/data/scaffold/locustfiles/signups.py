"""A signup rush: every iteration registers a brand-new user.

Signup hashes the password, so this is the CPU-bound scenario for the target.
"""

from locust import HttpUser, between, task

import common


class SignupUser(HttpUser):
    wait_time = between(0.05, 0.3)

    @task
    def sign_up(self):
        common.register(self.client)
