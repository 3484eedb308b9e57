"""tinythink: small, fast reasoning language models on an ordinary CPU."""

__version__ = "0.1.0"
