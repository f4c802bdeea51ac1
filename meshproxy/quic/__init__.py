"""QUIC and HTTP/3 on aioquic (pinned), post-quantum: X25519MLKEM768 under the TCP links' policy.

``pqtls`` adds the hybrid group to aioquic's TLS engine, ``handshake`` applies meshproxy's TLS
policy and peer checks to a QUIC connection, ``tlsconfig`` turns a ``TlsConfig`` into aioquic's
configuration. Nothing outside this package imports it unless a QUIC listener or cluster is
configured (tests/integration/test_import_discipline.py keeps an idle proxy from loading aioquic).
"""
