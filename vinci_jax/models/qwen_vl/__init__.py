"""What the two Qwen-VL families (Qwen2.5-VL, Qwen3-VL) share, written once: the decoder, KV cache, image splicing
and the ForConditionalGeneration wrapper (`modeling`), the vision attention and patch embedding (`vision`), the
config.json pieces (`config`) and the tiny random test checkpoints (`testing`). Each family package keeps only what
truly differs (its attention options, mRoPE slot layout, vision tower layout, DeepStack, config fields)."""
