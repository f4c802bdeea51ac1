"""meshproxy on Kubernetes: the annotation and label names, the CRDs, injection and the install.

``annotations`` (the documented ``meshproxy.io/`` names and what their values mean) and ``crds``
(the mesh-policy CRDs, from one schema source) are shared by the injector, the install and the
Kubernetes discovery source. Must not depend on: a Kubernetes client library, asyncio.
"""
