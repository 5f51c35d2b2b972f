"""The config.ini workflow of the earlier script pipeline: the file (:mod:`~ccdcal.config.inifile`) and
``ccdcal run CONFIG`` end to end (:mod:`~ccdcal.config.run`)."""
