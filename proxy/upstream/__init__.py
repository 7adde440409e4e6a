"""Upstreams: the own HTTP/1.1 client (transport) and the one way to call an upstream and read its errors (calls)."""
