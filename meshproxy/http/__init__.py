"""HTTP/1.1 codec glue and the per-request stream that joins a downstream and an upstream."""
