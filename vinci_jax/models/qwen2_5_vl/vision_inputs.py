"""Moved to `vinci_jax.models.vision_inputs` (the layout is shared by both families); names kept for old imports."""

from vinci_jax.models.vision_inputs import (  # noqa: F401
    VisionInputs,
    blank_like,
    empty_vision_inputs,
    global_reverse_index,
    grouped_vision_inputs,
    image_slot_patches,
    pad_vision_inputs,
    prepare_vision_inputs,
    prepare_vision_rows,
    row_length_for,
    rows_needed,
    stack_vision_groups,
    window_slot_patches,
)
