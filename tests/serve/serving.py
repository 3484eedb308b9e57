"""Constants shared by the server tests."""

KEY = "test-key-123"
MODEL = "smollm2-135m"
