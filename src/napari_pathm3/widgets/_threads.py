"""The "threads" setting of both dock widgets: ``auto`` (free cores, or ``$NAPARI_PATHM3_THREADS``) or a
number; the widget's job passes it to :func:`napari_pathm3.threads.apply_thread_policy`."""

from __future__ import annotations

from magicgui.widgets import ComboBox

from ..threads import available_cores

AUTO = "auto"


def thread_choices() -> list[str]:
    return [AUTO, *(str(n) for n in range(1, available_cores() + 1))]


def threads_widget() -> ComboBox:
    return ComboBox(
        label="threads",
        choices=thread_choices(),
        value=AUTO,
        tooltip="CPU threads for this job: auto = free cores (load average) or $NAPARI_PATHM3_THREADS; "
        "fewer threads keep napari responsive on a busy machine",
    )
