"""Upstream side of the request path: endpoint selection and, later, pooled connections."""
