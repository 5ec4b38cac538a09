"""Every test process, and the daemons and clients it starts, runs grpc-core as ``jouled run``
does (``jouled.ingest.grpccore``): set here, before any test module imports grpc."""

from jouled.ingest import grpccore

grpccore.choose_experiments()
