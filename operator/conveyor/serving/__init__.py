"""The model server: V2 inference protocol, drift statistics against the reference profile,
Prometheus metrics."""
