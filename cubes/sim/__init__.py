"""The simulator wing: physical-optics ePSFs (``optics``), star fields, chip layout and dithers
(``field``), detector effects (``detector``) and the ``simulate`` source stage that writes a
simulated data set (exposures, truth, psf)."""
