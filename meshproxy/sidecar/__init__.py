"""Sidecar mode: the transparent capture of a pod's TCP traffic (``meshproxy iptables``) and
the sidecar's place in the pod's lifecycle.

Owns the netfilter rules that send an unmodified application's connections to the proxy's
outbound (15001) and inbound (15006) listeners, as Istio's ``istio-iptables`` does;
``meshproxy wait-ready`` (``wait_ready.py``), which holds the application back until its sidecar
is ready; and the shutdown order's policy (``lifecycle.py``). Must not depend on the proxy's
runtime (listeners, HTTP, TLS): the capture runs before the proxy starts, often in a separate
init step, and ``wait-ready`` in the application's container.
"""
