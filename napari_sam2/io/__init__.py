"""Files in and out: image readers, label writers, session files and per-object statistics.

Nothing here imports torch, Qt or napari at import time.
"""
