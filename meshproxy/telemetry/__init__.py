"""Telemetry in other products' shapes: Istio's standard metrics (``istio.py``)."""
