"""Energy collectors: one module per source (RAPL, NVML, estimate).

A collector reads raw counters through an injected root (a sysfs path, a pynvml module)
and returns cumulative joules with the source's own wraparound already unfolded. It knows
nothing of workloads, prices or Prometheus.
"""
