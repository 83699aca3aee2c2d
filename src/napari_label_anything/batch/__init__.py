"""Jobs that write files: batch prediction over files, folders and zarr inputs.

- ``jobs``: inputs expanded and checked before a model loads, outputs named and claimed,
  ``run_job`` per input (TIFF or OME-Zarr, objects, probabilities); no dask
- ``cluster``: the same jobs on a dask.distributed cluster (the only module importing dask)
"""
