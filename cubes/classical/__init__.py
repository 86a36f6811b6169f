"""The classical wing: centring algorithms as kernels over numpy arrays. Nothing here opens a
store. ``epsf`` (the EffectivePSF), ``peaks`` (peak finding and local sky), ``psffit`` (ePSF
fitting, hst1pass-like), ``empirical`` (ePSF builders: photutils EPSFBuilder, Anderson & King),
``transforms`` (cubic transformations, matching, offset phase), ``stats`` (sigma-clipped means,
robust sigma), ``cutouts`` (rasters normalized to sum 1)."""
