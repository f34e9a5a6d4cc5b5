"""minirlhf: from GPT to ChatGPT-style alignment, built from scratch on a toy world."""

__version__ = "0.1.0"
