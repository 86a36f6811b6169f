"""The archive wing: calibrated WFPC2 files into a store (``ingest``, the real-data source
stage), stores back out as archive-layout FITS (``export_fits``), and MAST downloads (``mast``)."""
