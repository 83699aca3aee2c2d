"""napari-label-anything: multi-class few-shot segmentation from visual prompts."""
__version__ = "0.1.0"
