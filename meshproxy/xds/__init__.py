"""The proxy's ADS client: Envoy's xDS v3 over one gRPC stream (state of the world or delta).

``state`` is the sans-I/O protocol core, ``assemble`` turns accepted resources into one runtime
``Config`` (warming included), ``resources`` decodes and compiles one resource, and ``client``
is the I/O shell that keeps the stream up and hands each ``Config`` to ``Server.apply``.
Nothing on the request path imports this package. See docs/xds-client.md.
"""
