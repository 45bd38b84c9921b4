"""Frozen pre-optimisation reference copies of edgeray/validation.py and edgeray/events.py, used only by tests/test_ingest_fastpath.py."""
