"""jouled: energy and carbon telemetry for ML inference hosts.

Collectors read raw energy counters (RAPL, NVML) or estimate them; the daemon ticks,
attributes energy to workloads and request spans, and serves Prometheus metrics.
"""

__version__ = "0.1.0"
