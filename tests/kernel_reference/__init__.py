"""Frozen copies of the decision kernel's bookkeeping as it was before its numpy fast paths (targets to orders,
decision ids, the per-symbol watermark and the time-order split); tests/test_kernel_fastpath.py compares them."""
