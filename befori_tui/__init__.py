"""befori-tui: what a self-hosted LLM costs per input and output token, measured live."""

__version__ = "0.1.0"
