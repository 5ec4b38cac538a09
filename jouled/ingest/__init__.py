"""Ingest: request spans in over HTTP (OTLP/HTTP protobuf and JSON, jouled's JSON schema).

``decode`` turns bodies into validated ``Span`` objects with rejection reasons; ``app`` is
the aiohttp application that hands them to a ``SpanSink`` (the daemon's splitter).
"""
