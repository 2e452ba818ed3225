"""Slide reading (OpenSlide / tiffslide), lazy pyramids, feature stores."""

from .slide import Slide, open_slide

__all__ = ["Slide", "open_slide"]
