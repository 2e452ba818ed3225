"""What the "Caption slide" widget writes in its result box and notes: the result as text (warnings, class,
probabilities, caption or why it is withheld, the grid, run facts) and the fixed explanations."""

from __future__ import annotations

from ..result import SlideResult

HEATMAP_NOTE = (
    "Heatmap colours: attention relative to uniform 1/N on a fixed log scale, 1/8x..8x as the colour bar reads "
    "(log2 -3..+3; 1x = every patch equal): nearly uniform attention shows as one colour."
)
NOT_BRIGHTFIELD = (
    "Only brightfield (RGB) slides can be captioned: {names} {verb} not (fluorescence channels, greyscale or "
    "16-bit images; the encoders take RGB H&E patches), so {them} {verb} not offered as the slide."
)
ZERO_SHOT_NOTE = (
    "Zero-shot: a published CLIP-style model compares every patch with the prompts of each class name below "
    "(no PathM3 training, no caption). Its weights come from the Hugging Face hub once (network), then the "
    "local cache; or pick a saved CLIP folder as the checkpoint."
)
DEMO_NOTE = (
    "The demo model is trained in under a minute on a few hand-drawn regions of one sample slide with a simple "
    "colour/texture encoder. It shows how PathM3 works; it is NOT diagnostic."
)


def not_brightfield(names: list[str]) -> str:
    many = len(names) > 1
    return NOT_BRIGHTFIELD.format(
        names=", ".join(repr(n) for n in names), verb="are" if many else "is", them="they" if many else "it"
    )


def format_result(result: SlideResult, *, demo: bool = False, zero_shot: bool = False) -> str:
    """The text shown in the widget: warnings, class, every probability, caption and run facts."""
    lines = []
    if demo:
        lines += ["DEMO MODEL - NOT DIAGNOSTIC", ""]
    if zero_shot:
        lines += [
            f"ZERO-SHOT ({result.encoder_name}): class prompts compared with every patch, no PathM3 model; "
            "untested on your data, not diagnostic.",
            "",
        ]
    warnings = tuple(getattr(result, "warnings", ()) or ())
    lines += [f"WARNING: {w}" for w in warnings] + ([""] if warnings else [])
    lines.append(f"Class: {result.label}  ({result.probabilities[result.label]:.1%})")
    accuracy = result.accuracy_text()
    if not zero_shot:
        lines.append(f"  ({accuracy})" if accuracy else "  (the model's accuracy is not recorded)")
    lines += [f"  {name}: {p:.3f}" for name, p in sorted(result.probabilities.items(), key=lambda kv: -kv[1])]
    if zero_shot:  # no caption; the heatmap is the predicted class's map, each class has its own layer
        lines += [
            "",
            f"Heatmap: where '{result.label}' applies; every class's map is a layer "
            f"'{result.slide_name} phrase: <class>' (hidden until shown).",
            "",
        ]
    elif result.caption_withheld:  # a caption the model has not learned is noise, not a finding
        lines += ["", "Caption: (withheld: see the warning above)", ""]
    else:
        lines += ["", f"Caption: {result.caption or '(empty)'}", ""]
        agree = result.caption_class_agreement
        if agree["agrees"] is False:
            lines += [f"WARNING: {agree['note']}.", ""]
    if result.grid.mpp is None:
        lines.append(
            "The slide has no µm/px: tiled at level 0 in its own pixels, maybe not the magnification the model "
            "was trained at; enter the slide's µm/px above for patches of the model's physical size."
        )
    else:
        lines.append(
            f"Patches: {result.grid.patch_size} px at {result.grid.mpp:.3g} µm/px "
            f"({result.grid.patch_size * result.grid.mpp:.0f} µm)."
        )
    lines += [HEATMAP_NOTE, f"This run: {result.spread_text()}.", ""]
    where = "selected region" if result.region is not None else "whole slide"
    lines.append(
        f"{result.num_patches} patches ({where}), model {result.model_name}, encoder {result.encoder_name}, {result.device}"
    )
    lines.append("time: " + ", ".join(f"{k} {v:.1f}s" for k, v in result.timings.items()))
    return "\n".join(lines)
