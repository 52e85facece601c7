"""Rollout sampling for the VLM: jitted prefill over a KV cache, a device-side decode loop, group sampling."""

from vinci_jax.sampling.prompts import PromptBatch, bucket_length, make_prompt_batch
from vinci_jax.sampling.sampler import SampleOutput, Sampler, SamplingParams

__all__ = ["PromptBatch", "SampleOutput", "Sampler", "SamplingParams", "bucket_length", "make_prompt_batch"]
