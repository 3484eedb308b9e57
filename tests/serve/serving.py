"""Constants shared by the server tests."""

KEY = "test-key-123"
MODEL = "smollm2-135m"

# small thinking budgets keep the reasoning tests fast
BUDGETS = {"minimal": 0, "low": 8, "medium": 16, "high": 32}
