"""Error types. Every expected failure raises a subclass of :class:`PathM3Error` whose message names the
file or setting at fault and how to fix it."""

from __future__ import annotations


class PathM3Error(Exception):
    """Base class of every error this package raises on purpose."""


class SlideReadError(PathM3Error):
    """A slide could not be opened or read (missing, truncated, unsupported format, empty directory)."""


class MissingMppError(PathM3Error):
    """The slide has no microns-per-pixel and the operation needs a physical resolution."""


class GridError(PathM3Error):
    """The patch grid a slide's metadata implies is absurd (patches of a few pixels, millions of patches):
    usually a wrong microns-per-pixel in the file."""


class NotBrightfieldError(SlideReadError):
    """The slide is not a brightfield RGB image (fluorescence, multichannel, 16-bit grey): it can be viewed,
    but PathM3's encoders and models need brightfield RGB."""


class NoTissueError(PathM3Error):
    """Tissue detection found nothing to analyse."""


class CheckpointError(PathM3Error):
    """A model checkpoint is missing, unreadable or does not fit the model/encoder/classes asked for."""


class EncoderError(PathM3Error):
    """A patch encoder could not be resolved or loaded (unknown name, gated or missing weights)."""


class FeatureStoreError(PathM3Error):
    """A feature store is corrupt, incomplete or does not match the requested slide/grid/encoder."""


class NonFiniteError(PathM3Error):
    """A number that must be finite is NaN or Inf (a training loss, a feature, a weight, a probability)."""


class Cancelled(PathM3Error):
    """A long-running operation was cancelled by the user."""


class ManifestError(PathM3Error):
    """A manifest (CSV of bags or slides) is unusable: unknown split, duplicate or path-like ids, a class
    without training bags, no training bags at all."""


class RegionError(PathM3Error, ValueError):
    """An annotated region is unusable: not a ``(k, 2)`` polygon, a NaN/Inf vertex, or off the slide. (A
    ``ValueError`` too, as regions raised before this type existed.)"""


class DeviceError(PathM3Error, ValueError):
    """A device name that is not one (``gpu``, ``cuda:x``) or whose hardware/torch build is absent."""


class OptionError(PathM3Error, ValueError):
    """An option, argument or environment variable out of its range (NaN, negative, absurdly large); the
    message names it, the value and the range. (A ``ValueError`` too, as such checks raised before.)"""
