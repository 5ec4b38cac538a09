"""The optional C span scanner (jouled/ingest/_otlpscan.c); everything else is in pyproject.toml.

``optional=True``: where it cannot be compiled (no C compiler, no Python headers) the install
goes on and jouled uses the pure-Python scanner (jouled/ingest/otlpscan.py).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("jouled.ingest._otlpscan", ["jouled/ingest/_otlpscan.c"], optional=True),
    ]
)
