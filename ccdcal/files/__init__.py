"""Files on disk: FITS reading and atomic writing, calibrated outputs, file names, hashing.

Knows FITS and the file system, not the catalog (docs/design.md, Files).
"""
