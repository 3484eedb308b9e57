import subprocess
import sys
import time
from dataclasses import dataclass

import httpx
import pytest

from tinythink.eval.run import free_port


@dataclass
class Served:
    url: str  # the API's base URL, .../v1
    key: str


@pytest.fixture(scope="session")
def served():
    """`tinythink serve` in its own process, as a user runs it (float32 weights and KV cache, and without the safety
    filter, which tests/serve/test_safety_api.py covers: replies then equal a local run's)."""
    port = free_port()
    key = "eval-key"
    server = subprocess.Popen([sys.executable, "-m", "tinythink.cli", "serve", "-m", "smollm2-135m", "--port", str(port), "--dtype",
                               "float32", "--kv-dtype", "float32", "--api-key", key, "--no-safety"], stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(900):
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        yield Served(url + "/v1", key)
    finally:
        server.terminate()
        server.wait(timeout=30)
