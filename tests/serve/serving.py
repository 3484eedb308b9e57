"""Constants and helpers shared by the server tests (a module of its own: another folder's conftest may be the
one imported as `conftest`)."""

from tinythink.eval.run import free_port  # noqa: F401  (the server tests' free localhost ports)

KEY = "test-key-123"
MODEL = "smollm2-135m"

# small thinking budgets keep the reasoning tests fast
BUDGETS = {"minimal": 0, "low": 8, "medium": 16, "high": 32}

