"""``ccdcal reproduce``: a calibrated light or a master made again from what the catalog recorded, and
compared, data unit by data unit, with the file it recorded.

- :mod:`ccdcal.reproduction.recipes` reads the rows: what a result was made from (the raw files and masters
  with the sha256 recorded for that use) and how (``calibrations.steps``, ``masters.parameters``), as the
  worker's :class:`~ccdcal.lights.task.FrameTask` or the masters' :class:`~ccdcal.masters.groups.GroupPlan`;
- :mod:`ccdcal.reproduction.remake` makes it again, in a temporary folder, by the code that made it;
- :mod:`ccdcal.reproduction.compare` compares the data units and describes a difference;
- :mod:`ccdcal.reproduction.core` is the order of work and the result (:func:`reproduce`).

This package sits with the commands (``status``, ``report``), above ``lights`` and ``masters``: it calls
the calibration and the combine themselves, never a copy of them (docs/design.md, Architecture).
"""
