"""Upstream side of the request path: clusters, their hosts and pooled connections, and the
load-balancing pickers in ``lb/``."""
