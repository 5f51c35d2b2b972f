"""``ccdcal process``: plan every light, match its masters, calibrate it in workers, record the provenance.

Order of work: :mod:`~ccdcal.lights.pipeline` (the command, top to bottom), :mod:`~ccdcal.lights.plan`
(each light against its last calibration), :mod:`~ccdcal.lights.matching` (its masters, step by step),
:mod:`~ccdcal.lights.claims` (concurrent runs), :mod:`~ccdcal.lights.coordinator` (workers and rows), and
the worker side, which never touches the catalog: :mod:`~ccdcal.lights.task` (the contract),
:mod:`~ccdcal.lights.worker`, :mod:`~ccdcal.lights.worker_steps`, :mod:`~ccdcal.lights.pixels`,
:mod:`~ccdcal.lights.history`.
"""
