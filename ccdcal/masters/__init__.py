"""``ccdcal masters``: group calibration frames, choose their calibrators, combine them into master bias,
dark, flat and bad-pixel frames, and record each master with its inputs (docs/design.md, Science).

Order of work: :mod:`~ccdcal.masters.build` (the command), :mod:`~ccdcal.masters.calibrators` (a group's
calibrators and identity), :mod:`~ccdcal.masters.combine` (the pixels), :mod:`~ccdcal.masters.files` (the
file and its rows); :mod:`~ccdcal.masters.plan` is the dry run, :mod:`~ccdcal.masters.groups` the shared
words, :mod:`~ccdcal.masters.optional` the optional steps of the inputs, :mod:`~ccdcal.masters.bpm` the
bad-pixel masks.
"""
