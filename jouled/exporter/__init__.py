"""Prometheus views of the published snapshot, and the HTTP app that serves them.

Nothing here computes attribution or reads a collector: ``collect()`` only renders the
latest immutable snapshot, so a scrape can never disturb or stall the tick loop.
"""
