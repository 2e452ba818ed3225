"""Qt dock widgets (magicgui Containers): the only modules that import Qt."""
