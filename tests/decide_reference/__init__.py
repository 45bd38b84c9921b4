"""Frozen pre-optimisation reference copies of the decide() pieces, used only by tests/test_decide_fastpath.py."""
