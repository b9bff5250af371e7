"""Checks of command-line numbers and cluster addresses, made before anything is written or started.

`at_least(n)` is the argparse `type=` of the orchestrator's numbers: --max-concurrent, --num-cpus,
--n-trials, --workers (1), --max-retries, --split-seed (0); `unreachable` runs before
`ray.init(address=...)` in orchestrator/raybackend/pool.py's connect, so a wrong --address fails in
seconds with one line instead of Ray's minutes of retries.
"""

from __future__ import annotations

import argparse
import socket
from collections.abc import Callable
from urllib.parse import urlsplit


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= minimum (argparse then exits 2 naming the option)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def unreachable(address: str | None, timeout_s: float = 10.0) -> str | None:
    """Why nothing answers at a Ray address (one line), or None. None and "auto" (a local cluster
    found through /tmp/ray) are not checked; HOST:PORT, ray://HOST:PORT and http(s)://HOST:PORT get
    one TCP connection attempt of at most timeout_s."""
    if address is None or address == "auto":
        return None
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError as e:  # a port that is not a number
        return f"--address {address}: {e}"
    if not host or port is None:
        return f"--address {address}: expected HOST:PORT (or ray://HOST:PORT, http://HOST:PORT)"
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except TimeoutError:
        return f"--address {address}: no answer from {host}:{port} within {timeout_s:g} s"
    except OSError as e:
        return f"--address {address}: cannot connect to {host}:{port}: {e.strerror or e}"
