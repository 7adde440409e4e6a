"""Fine-tuning that needs an upstream: the service the handlers and the CLI call, and the background poller."""
