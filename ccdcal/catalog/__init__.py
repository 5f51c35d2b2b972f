"""The store, ground floor: the catalog database (SQLAlchemy models, sessions, migrations on open) and the
SQL every stage shares — grouping, matching and ranking masters, header values, lineage, states.

Imports nothing of the stages above it (docs/design.md, Architecture).
"""
