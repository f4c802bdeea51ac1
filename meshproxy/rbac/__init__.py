"""Authorization: Envoy's RBAC (and meshproxy's post-quantum principals), sans-I/O.

``model.py`` holds the configured rule trees, ``engine.py`` compiles and evaluates them. The
filters that apply them sit with the layers they guard (the HTTP filter chain, the network
filter chain). See docs/authorization.md.
"""
