"""Conveyor: a Kubernetes-native ML pipeline operator for scikit-learn workloads."""

__version__ = "0.1.0"
