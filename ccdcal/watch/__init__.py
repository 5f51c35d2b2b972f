"""``ccdcal watch``: ingest (and calibrate) each frame as it lands in the watched folders (issue 23, in
progress): :mod:`ccdcal.watch.settle` decides when a file a capture program writes is whole."""
