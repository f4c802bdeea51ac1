"""HTTP/2 and gRPC through the proxy: the h2 codec under callback-driven asyncio protocols."""
