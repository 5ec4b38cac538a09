"""The optional C span scanner (jouled/ingest/_otlpscan.c) and request selector
(jouled/ingest/_roots.c); everything else is in pyproject.toml.

``optional=True``: where it cannot be compiled (no C compiler, no Python headers) the install
goes on and jouled uses the pure-Python scanner (jouled/ingest/otlpscan.py). ``pip install -e .``
(make run, make test) builds it in place, next to the source; the Makefile's stamps follow
this file and the C file too, so ``make`` rebuilds it after an edit (by hand:
``.venv/bin/pip install --no-deps -e .``).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("jouled.ingest._otlpscan", ["jouled/ingest/_otlpscan.c"], optional=True),
        Extension("jouled.ingest._roots", ["jouled/ingest/_roots.c"], optional=True),
    ]
)
