"""The Label Anything network as a ``Segmenter``.

- ``segmenter``: ``LabelAnythingSegmenter`` (feature and prototype caches, batched planes, tiling)
- ``model_inputs``: Episode prompts -> the model's prompt tensors (row, col -> x, y); training's
  collate builds its batches with it too
- ``transforms``: torch twins of ``preprocessing`` used on CUDA
"""
