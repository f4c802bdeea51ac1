"""Listeners: bound sockets, filter-chain selection, drain."""
