"""A real server on a free localhost port, shared by the server and page tests; and headless Chromium."""

from pathlib import Path

import openai
import pytest
import torch
from playwright.sync_api import sync_playwright

from tinythink.llm import LLM
from tinythink.model.load import load_model
from tinythink.serve.app import ServerSettings, create_app
from tinythink.serve.host import ModelHost

from serving import BUDGETS, KEY, MODEL, running


@pytest.fixture(scope="module")
def server():
    # float32: batched results then equal unbatched ones exactly (in bfloat16, a 16-row matmul rounds differently
    # from a 1-row one, so near-ties can go the other way), which lets the concurrency test check independence
    host = ModelHost(MODEL, LLM(load_model(MODEL, torch.float32)), max_batch=16, max_queue=64, context=1024)
    app = create_app({MODEL: host}, ServerSettings(api_keys=[KEY], max_body_bytes=64 << 10, thinking_budgets=BUDGETS))
    with running(app) as url:
        yield url, host
    host.close()
    host.llm.model.clear_caches()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key=KEY, max_retries=0, timeout=120)


CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()
