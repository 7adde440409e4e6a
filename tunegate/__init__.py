"""tunegate as it is installed: ``tunegate.proxy`` (the gateway), ``tunegate.registry`` (the fine-tune
registry and its database) and ``tunegate.config`` (settings). Their folders are proxy/, registry/ and config/
at the repository root; the links in this folder give them these names, for setuptools, the editable install,
mypy and editors alike."""
