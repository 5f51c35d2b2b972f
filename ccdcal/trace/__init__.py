"""Looking back: ``ccdcal provenance`` (from the catalog or from a file's header alone), ``audit``,
``impact``, ``mark-bad`` and ``mark-good`` (docs/design.md, Catalog)."""
