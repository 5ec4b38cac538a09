"""The tick pipeline's data: the tick, the published snapshot and its typed sections.

Everything above (attribution, cost, exporter, ledger, daemon) imports these types
downward; this package imports only the collectors' small shared types and the clock.
"""
