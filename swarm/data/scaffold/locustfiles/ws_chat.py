"""A chat room: every client joins one room, sends messages at a set rate and receives
everyone's broadcasts.

Each message is timed until the room sends it back to its sender (`WS rtt`); the others'
messages count as pushes (`WS recv`). Against the demo target: `/ws/room/NAME`.

Knobs (Locust custom arguments; the environment variable is the default, as is what follows):
  --ws-room NAME      WS_ROOM      lobby   the room every client joins
  --ws-rate N         WS_RATE      1       messages per second per client
  --ws-messages N     WS_MESSAGES  0       messages per client, then it only listens (0: no end)
  --ws-path PREFIX    WS_PATH      /ws/room/   the room's URL is PREFIX + NAME
"""

import time

from locust import events, task

from ws_user import WebSocketUser


@events.init_command_line_parser.add_listener
def _arguments(parser):
    parser.add_argument("--ws-room", env_var="WS_ROOM", default="lobby", help="Room to join")
    parser.add_argument(
        "--ws-rate", env_var="WS_RATE", type=float, default=1.0, help="Messages/s per client"
    )
    parser.add_argument(
        "--ws-messages",
        env_var="WS_MESSAGES",
        type=int,
        default=0,
        help="Messages per client, then listen only (0: no end)",
    )
    parser.add_argument("--ws-path", env_var="WS_PATH", default="/ws/room/", help="Room URL prefix")


class ChatClient(WebSocketUser):
    def on_start(self):
        opts = self.environment.parsed_options
        self.room = opts.ws_room
        self.path = opts.ws_path + self.room
        self.interval = 1.0 / opts.ws_rate if opts.ws_rate > 0 else 1.0
        self.quota = opts.ws_messages
        self.sent = 0
        self.next_at = time.perf_counter()

    def wait_time(self):
        # Constant pacing: a slow echo eats into the wait instead of lowering the rate.
        return max(0.0, self.next_at - time.perf_counter())

    @task
    def chat(self):
        self.next_at = max(self.next_at, time.perf_counter()) + self.interval
        if not self.connected:
            self.connect(self.path)
            return
        if self.quota and self.sent >= self.quota:
            return  # done talking: keep listening to the room
        self.sent += 1
        self.rtt(room=self.room, text=f"message {self.sent}")
