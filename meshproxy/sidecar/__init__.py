"""Sidecar mode: the transparent capture of a pod's TCP traffic (``meshproxy iptables``).

Owns the netfilter rules that send an unmodified application's connections to the proxy's
outbound (15001) and inbound (15006) listeners, as Istio's ``istio-iptables`` does. Must not
depend on the proxy's runtime (listeners, HTTP, TLS): it runs before the proxy starts, often
in a separate init step.
"""
