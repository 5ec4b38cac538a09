"""Live cost and carbon: the cost stage of the tick pipeline and the grid-intensity poller.

The offline thesis model (FLOPs, fits, predictions, reports) is ``jouled.costmodel``.
"""
