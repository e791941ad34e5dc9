"""Qt parts of napari-sam2: the dock widget and its pieces. Imported by napari via the manifest."""
