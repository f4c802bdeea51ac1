"""The admin endpoint."""
