"""The HTTP surface, one module per resource: handlers translate HTTP and call the registry or a service."""
