"""The supervisor: config, collectors, the tick loop, HTTP listeners and lifecycle."""
