"""Files people have and outputs others read.

- ``image_reader``: the one image reader (TIFF, PNG/JPEG/BMP, CZI/ND2/LIF), axes from metadata
- ``label_files``: label TIFFs with class names, atomic writes, image base names, overlays
- ``ome_zarr``: OME-Zarr labels and probability images written plane by plane; zarr inputs
- ``npz_reader``: ``.npz`` members of an untrusted file, each checked before it is read
- ``claims``: one run per output name (claim files), exclusive locks of shared files

Nothing here imports ``inference``, ``widget`` or ``hub``.
"""
