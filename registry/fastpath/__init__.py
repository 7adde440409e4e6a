"""Statements run on DBAPI connections of their own, outside SQLAlchemy's per-call layers, for the hot writes and
reads of the request path. Each writes and reads exactly what its SQLAlchemy twin does
(tests/integration/test_fastpath.py):

- :mod:`registry.fastpath.prepared`: the seam, a statement compiled once for a dialect with SQLAlchemy's bind
  processing of each parameter;
- :mod:`registry.fastpath.counters`: the budget read and the charge (``registry.counters.spent_e8``, ``charge``);
- :mod:`registry.fastpath.usage`: the usage writer's insert on SQLite (``registry.usage.insert_usage``).
"""
