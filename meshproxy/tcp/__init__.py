"""The tcp_proxy network filter."""
