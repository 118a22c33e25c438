"""The measurement core. Nothing in here may import Textual (tests/test_core_hygiene.py checks)."""
