"""The HTTP connection manager (Envoy's HCM and router): per-request policy above both codecs."""
