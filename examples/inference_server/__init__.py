"""Example: an instrumented text-classification server (see README.md here)."""

import os

# The tiny model's matmuls are small; OpenBLAS's worker threads spin-wait on them and made a
# 500-text request 7x slower on a busy 2-core host. Set before numpy is imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
