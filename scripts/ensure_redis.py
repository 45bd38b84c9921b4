"""Make sure a Redis server answers at REDIS_URL (default redis://127.0.0.1:6379/0).

Used by the test command on a fresh machine: if nothing answers, start `redis-server` (installing
it with apt-get when it is missing and we are root), then wait until it answers PING.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from urllib.parse import urlparse

import redis


def ping(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.exceptions.RedisError:
        return False


def main() -> int:
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    if ping(url):
        print(f"redis: answering at {url}")
        return 0
    binary = shutil.which("redis-server")
    if binary is None and os.geteuid() == 0 and shutil.which("apt-get"):
        print("redis: redis-server not found, installing with apt-get")
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "redis-server"], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        binary = shutil.which("redis-server")
    if binary is None:
        print("redis: nothing answers at %s and redis-server is not installed; install Redis or set REDIS_URL" % url)
        return 1
    parsed = urlparse(url)
    port = str(parsed.port or 6379)
    subprocess.run([binary, "--daemonize", "yes", "--bind", parsed.hostname or "127.0.0.1", "--port", port,
                    "--save", "", "--appendonly", "no"], check=True)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # waiting for a server we just started to accept connections
        if ping(url):
            print(f"redis: started {binary} on port {port}")
            return 0
        time.sleep(0.1)
    print("redis: started but never answered PING")
    return 1


if __name__ == "__main__":
    sys.exit(main())
