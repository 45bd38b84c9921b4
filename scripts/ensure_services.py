"""Make sure what the tests need outside Python is there; quick and idempotent when it already is.

- Redis answering at REDIS_URL (default redis://127.0.0.1:6379/0): if nothing answers, start `redis-server`
  (installing it with apt-get when it is missing and we are root), then wait until it answers PING.
- Chromium at /usr/bin/chromium for the dashboard's browser tests (Playwright drives the system browser:
  it cannot download its own here): installed with apt-get when missing and we are root.
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


CHROMIUM = "/usr/bin/chromium"  # tests/test_dashboard.py launches this binary


def apt_install(package: str) -> None:
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", package], check=True,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def can_apt() -> bool:
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def ensure_chromium() -> int:
    if os.path.exists(CHROMIUM):
        print(f"chromium: {CHROMIUM}")
        return 0
    if not can_apt():
        print(f"chromium: {CHROMIUM} is missing; install Debian's chromium package (as root: apt-get install chromium)")
        return 1
    print("chromium: not found, installing with apt-get")
    apt_install("chromium")
    return 0 if os.path.exists(CHROMIUM) else 1


def ensure_redis() -> int:
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    if ping(url):
        print(f"redis: answering at {url}")
        return 0
    binary = shutil.which("redis-server")
    if binary is None and can_apt():
        print("redis: redis-server not found, installing with apt-get")
        apt_install("redis-server")
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


def main() -> int:
    return max(ensure_redis(), ensure_chromium())


if __name__ == "__main__":
    sys.exit(main())
