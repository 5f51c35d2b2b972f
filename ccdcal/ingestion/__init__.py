"""``ccdcal ingest``: walk folders, read every FITS header, normalise its dialect, write frames and header
cards to the catalog (docs/design.md, Ingest)."""
