"""Attribution: host energy to workloads, and a workload's energy to its request spans.

A *workload* is an inference server found by PID, command line or cgroup; a *span* is one
request it served. ``spans`` holds the pure span splitter that settles each tick once.
"""
