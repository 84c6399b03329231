"""The load target: Debian's nginx on the lab's bridge, counting the requests it serves (P4
compares those counts, not Locust's own)."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path


class Nginx:
    """Debian's nginx on the bridge IP, with its own config, pid and log files in a temp dir."""

    def __init__(self, root: Path, ip: str):
        self.root, self.ip = root, ip
        self.port = self._free_port(ip)
        self.proc: subprocess.Popen | None = None

    @staticmethod
    def _free_port(ip: str) -> int:
        with socket.socket() as s:
            s.bind((ip, 0))
            return s.getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{self.port}"

    def start(self) -> "Nginx":
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.access(nginx, os.X_OK):
            raise SystemExit("bench: nginx not found: run `sh tests/system-deps.sh bench` "
                             "(installs nginx-light)")
        www = self.root / "www"
        www.mkdir(parents=True)
        (www / "index.html").write_text("<html><body>swarm bench</body></html>\n")
        for d in (self.root, www):
            os.chmod(d, 0o755)
        os.chmod(www / "index.html", 0o644)
        temps = "\n".join(f"  {k}_temp_path {self.root}/{k}_temp;"
                          for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        conf = self.root / "nginx.conf"
        conf.write_text(f"""\
worker_processes 1;
daemon off;
pid {self.root}/nginx.pid;
error_log {self.root}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
{temps}
  keepalive_requests 1000000;
  server {{
    listen {self.ip}:{self.port} backlog=4096;
    root {www};
    location = /nginx_status {{ stub_status; }}
    location / {{ }}
  }}
}}
""")
        self.proc = subprocess.Popen([nginx, "-e", str(self.root / "error.log"), "-p", str(self.root),
                                      "-c", str(conf)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)
        deadline = time.monotonic() + 10
        for _ in range(200):
            if self.proc.poll() is not None:
                raise SystemExit(f"bench: nginx exited: {self.proc.stderr.read().decode()[-500:]}")
            try:
                self.requests()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        self.stop()
        raise SystemExit("bench: nginx did not answer within 10s")

    def requests(self) -> int:
        """Requests nginx has handled so far (stub_status; includes this query)."""
        with urllib.request.urlopen(f"{self.url}/nginx_status", timeout=5) as resp:
            text = resp.read().decode()
        return int(text.splitlines()[2].split()[2])

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None
