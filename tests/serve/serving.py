"""Constants and helpers shared by the server tests (a module of its own: another folder's conftest may be the
one imported as `conftest`)."""

import contextlib
import threading
import time

import uvicorn

from tinythink.eval.run import free_port

KEY = "test-key-123"
MODEL = "smollm2-135m"

# small thinking budgets keep the reasoning tests fast
BUDGETS = {"minimal": 0, "low": 8, "medium": 16, "high": 32}



@contextlib.contextmanager
def running(app):
    """The app served by uvicorn on a free localhost port, in a thread; yields its base URL."""
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
