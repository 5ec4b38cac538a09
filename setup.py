"""The optional C span scanner (jouled/ingest/_otlpscan.c), request selector
(jouled/ingest/_roots.c; both read the wire through jouled/ingest/_otlpwire.h), tick
splitter (jouled/attribution/_split.c), pending-span record (jouled/attribution/_pending.c)
and the tick's process clocks (jouled/attribution/_proctick.c); everything else is in
pyproject.toml.

``optional=True``: where they cannot be compiled (no C compiler, no Python headers) the install
goes on and jouled uses their pure-Python twins (jouled/native.py). ``pip install -e .``
(make run, make test) builds them in place, next to the source; the Makefile's stamps follow
this file and the C files too, so ``make`` rebuilds them after an edit (by hand:
``.venv/bin/pip install --no-deps -e .``).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "jouled.ingest._otlpscan",
            ["jouled/ingest/_otlpscan.c"],
            depends=["jouled/ingest/_otlpwire.h"],
            optional=True,
        ),
        Extension(
            "jouled.ingest._roots",
            ["jouled/ingest/_roots.c"],
            depends=["jouled/ingest/_otlpwire.h"],
            optional=True,
        ),
        Extension("jouled.attribution._pending", ["jouled/attribution/_pending.c"], optional=True),
        Extension(
            "jouled.attribution._proctick", ["jouled/attribution/_proctick.c"], optional=True
        ),
        # Python's float arithmetic rounds each operation: no fused multiply-add.
        Extension(
            "jouled.attribution._split",
            ["jouled/attribution/_split.c"],
            optional=True,
            extra_compile_args=["-ffp-contract=off"],
        ),
    ]
)
