"""npe2 manifest targets (napari but no Qt)."""
