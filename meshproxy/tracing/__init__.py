"""Request tracing: W3C trace context (``w3c.py``), the sans-I/O tracer (``tracer.py``) and the
OTLP/gRPC exporter that runs beside the request path (``export.py``)."""
