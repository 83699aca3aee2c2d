"""Models: where they come from and where they run.

- ``registry``: known published checkpoints, registered local folders, ``auto`` resolution
- ``model_files``: checkpoint folders and hub repos -> ``LabelAnything`` (strict weights, offline
  messages, SAM ``.pth``)
- ``device``: auto / cuda / mps / cpu, ``import_torch``

Nothing here imports ``inference`` or ``widget``.
"""
