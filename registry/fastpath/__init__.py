"""Statements run on DBAPI connections of their own, outside SQLAlchemy's per-call layers, for the hot writes and
reads of the request path. Each writes and reads exactly what its SQLAlchemy twin does
(tests/integration/test_fastpath.py):

- :mod:`tunegate.registry.fastpath.prepared`: the seam, a statement compiled once for a dialect with SQLAlchemy's bind
  processing of each parameter;
- :mod:`tunegate.registry.fastpath.counters`: the budget read and the charge (``tunegate.registry.counters.spent_e8``,
``charge``);
- :mod:`tunegate.registry.fastpath.usage`: the usage writer's insert on SQLite
(``tunegate.registry.usage.insert_usage``).
"""
