"""The GUI-free SAM 2 engine: model loading, lazy frames, tracking sessions.

This is the only part of napari-sam2 that imports torch and transformers, and it never imports
Qt or napari. Submodules are imported on use.
"""
