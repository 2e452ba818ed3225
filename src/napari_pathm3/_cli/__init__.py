"""Sub-commands of the ``napari-pathm3`` CLI (one module each, see :mod:`napari_pathm3.cli`)."""
