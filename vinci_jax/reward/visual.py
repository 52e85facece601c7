"""VisualReward: per-rollout rewards for a batch of rollouts, with the encoder work batched on the device.

Host: parse responses (format / alignment), decode and check renders, resize each render to its target's size and
tile both (PIL, as released). Device: target crops are encoded once per prompt group (the reference encodes them
again for every rollout); render crops of all samples are packed into fixed-size bucketed batches with a mask,
encoded, compared with their target crop's features and summed per sample with the crop weights. A render crop
that is pixel-identical to its target crop scores exactly 1 without being encoded. An encoder with a `crop_mass`
(the offline one) also scales each crop's weight by its content, so the visual term is a content-weighted mean.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
from collections.abc import Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from vinci_jax.reward.config import ENCODER_OFFLINE, RewardConfig
from vinci_jax.reward.encoders import CropEncoder, build_encoder
from vinci_jax.reward.terms import ParsedResponse, parse_response
from vinci_jax.reward.tiling import match_size, tile_image

log = logging.getLogger(__name__)


@dataclass
class RewardBatch:
    """total[S] and the logged terms (format, visual == accuracy, execution, alignment), plus work statistics."""

    total: np.ndarray
    terms: dict[str, np.ndarray]
    stats: dict[str, Any] = field(default_factory=dict)
    statuses: list[str] = field(default_factory=list)


def _bucket(n: int, buckets: Sequence[int]) -> int:
    for size in buckets:
        if n <= size:
            return size
    return buckets[-1]


def _pow2(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(n, 1))))


def decode_render(result: Any, max_pixels: int) -> tuple[Image.Image | None, str]:
    """(RGB image, "ok") or (None, why) for a RenderResult-like object, a PIL image, PNG bytes or None."""
    if result is None:
        return None, "not_rendered"
    if isinstance(result, Image.Image):
        image = result
    else:
        png = result if isinstance(result, (bytes, bytearray)) else getattr(result, "png", None)
        status = "ok" if png is not None and isinstance(result, (bytes, bytearray)) else getattr(result, "status", "ok")
        if status != "ok" or png is None:
            return None, f"render_{status}" if status != "ok" else "render_no_image"
        try:
            image = Image.open(io.BytesIO(png))
        except Exception:  # noqa: BLE001 - any undecodable output is an invalid render
            return None, "invalid_image"
    width, height = image.size
    if width * height > max_pixels:
        return None, "too_big"
    if width == 0 or height == 0:
        return None, "invalid_image"
    try:
        return image.convert("RGB"), "ok"
    except Exception:  # noqa: BLE001
        return None, "invalid_image"


def _jitted(encoder: CropEncoder) -> tuple[Any, Any]:
    """The jitted encode and score functions of an encoder, shared by every VisualReward that uses it."""
    cached = getattr(encoder, "_reward_jitted", None)
    if cached is not None:
        return cached

    def encode(params, crops):
        return encoder.features(params, crops)

    crop_mass = getattr(encoder, "crop_mass", None)

    def score_chunk(params, crops, target_feats, pair, segment, weight, acc):
        feats = encoder.features(params, crops)
        targets = target_feats[pair]
        sims = encoder.similarity(targets, feats)
        if crop_mass is None:
            return acc.at[segment].add(sims * weight)
        weight = weight * crop_mass(targets, feats)
        return acc.at[segment].add(jnp.stack([sims * weight, weight], axis=-1))

    def target_mass(target_feats):
        return crop_mass(target_feats, target_feats)

    fns = (jax.jit(encode), jax.jit(score_chunk), None if crop_mass is None else jax.jit(target_mass))
    encoder._reward_jitted = fns  # type: ignore[attr-defined]  # lives and dies with the encoder
    return fns


class VisualReward:
    """The ViRL reward. `score(...)` takes renders made elsewhere (the ViRL loop's pool); `score_with_pool` renders."""

    def __init__(self, config: RewardConfig | None = None, encoder: CropEncoder | None = None, mesh=None):
        self.config = config or RewardConfig()
        self.encoder = encoder if encoder is not None else build_encoder(self.config, mesh=mesh)
        self.mesh = mesh
        self._encode, self._score_chunk, self._target_mass = _jitted(self.encoder)
        if self.encoder.name == ENCODER_OFFLINE:
            log.warning("reward encoder: %s (weight-free fallback, not DINOv2)", self.encoder_label)
        else:
            log.info("reward encoder: %s", self.encoder_label)
        self.totals = {"encoder_calls": 0, "target_crops_encoded": 0, "target_crops_saved": 0}

    @property
    def encoder_label(self) -> str:
        return getattr(self.encoder, "label", self.encoder.name)

    # ---------------------------------------------------------------- device helpers
    def _put(self, array: np.ndarray) -> jax.Array:
        if self.mesh is None:
            return jnp.asarray(array)
        from vinci_jax import sharding

        names = ("batch",) + (None,) * (array.ndim - 1)
        return jax.device_put(array, sharding.named_sharding(self.mesh, names, array.shape))

    def _chunks(self, n: int) -> list[tuple[int, int, int]]:
        """(start, stop, padded size) chunks covering n crops with bucketed batch sizes."""
        out, start, largest = [], 0, self.config.crop_buckets[-1]
        while start < n:
            stop = min(n, start + largest)
            out.append((start, stop, _bucket(stop - start, self.config.crop_buckets)))
            start = stop
        return out

    def encode_crops(self, crops: np.ndarray, stats: dict[str, Any] | None = None) -> jax.Array:
        """[N, H, W, 3] uint8 -> [N_padded, D] features (rows past N are padding)."""
        pieces = []
        for start, stop, size in self._chunks(len(crops)):
            batch = np.zeros((size, *crops.shape[1:]), np.uint8)
            batch[: stop - start] = crops[start:stop]
            pieces.append(self._encode(self.encoder.params, self._put(batch)))
            if stats is not None:
                stats["encoder_calls"] += 1
                stats["padded_crops"] += size - (stop - start)
        return pieces[0] if len(pieces) == 1 else jnp.concatenate(pieces, axis=0)

    # ---------------------------------------------------------------- public API
    def score(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        target_images: Sequence[Image.Image],
        render_results: Sequence[Any],
        group_ids: Sequence[Hashable] | None = None,
    ) -> RewardBatch:
        """Rewards for S rollouts. `render_results[i]`: a RenderResult (or PIL image / PNG bytes), None if not rendered.

        `group_ids[i]` names the prompt group; rollouts of a group share one target image, encoded once. Without
        group ids, rollouts that pass the same target image object share it. Runs on the reward's own mesh, whatever
        mesh the caller is in (multi-host: each process scores its rollouts on its local devices).
        """
        with jax.set_mesh(self.mesh) if self.mesh is not None else contextlib.nullcontext():
            return self._score(prompts, responses, target_images, render_results, group_ids)

    def _score(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        target_images: Sequence[Image.Image],
        render_results: Sequence[Any],
        group_ids: Sequence[Hashable] | None,
    ) -> RewardBatch:
        n = len(prompts)
        if not (len(responses) == len(target_images) == len(render_results) == n):
            raise ValueError(
                f"score() needs equally long inputs; got {n} prompts, {len(responses)} responses, "
                f"{len(target_images)} targets, {len(render_results)} render results"
            )
        groups = list(group_ids) if group_ids is not None else [id(t) for t in target_images]
        if len(groups) != n:
            raise ValueError(f"group_ids has {len(groups)} entries for {n} rollouts")
        cfg = self.config
        stats: dict[str, Any] = dict.fromkeys(
            (
                "encoder_calls",
                "padded_crops",
                "target_crops_encoded",
                "render_crops_encoded",
                "identical_crops_skipped",
                "reference_crops",
            ),
            0,
        )
        parsed = [parse_response(p, r, cfg.fold_alignment_into_format) for p, r in zip(prompts, responses, strict=True)]
        statuses: list[str] = []
        visual = np.zeros((n,), np.float64)

        # host: decode renders, tile targets once per group, tile renders
        target_sizes: dict[Hashable, tuple[int, int]] = {}
        first_of_group: dict[Hashable, int] = {}
        needed: dict[Hashable, int] = {}  # groups with at least one crop to compare -> first row in target_feats
        render_crops: list[np.ndarray] = []
        pair_keys: list[tuple[Hashable, int]] = []  # (group, crop index) of the target crop each render crop meets
        segment: list[int] = []
        weight: list[float] = []
        identical: list[tuple[int, Hashable, int, float]] = []  # (rollout, group, crop, weight) scored 1 unencoded
        weighted = self._target_mass is not None  # the encoder weights crops by their content (offline)
        all_identical = np.zeros((n,), bool)
        scored = np.zeros((n,), bool)
        tile_kw = dict(tile=cfg.tile_size, max_tiles=cfg.max_tiles, thumbnail=cfg.use_thumbnail)
        images: dict[int, Image.Image] = {}
        for i, (item, result) in enumerate(zip(parsed, render_results, strict=True)):
            if item.code is None:
                statuses.append("no_code")
                continue
            image, status = decode_render(result, cfg.max_render_pixels)
            statuses.append(status)
            if image is None:
                continue
            key = groups[i]
            if key not in target_sizes:
                target_sizes[key] = target_images[i].size
                first_of_group[key] = i
            elif target_sizes[key] != target_images[i].size:
                raise ValueError(
                    f"rollout {i}: group {key!r} was given targets of sizes {target_sizes[key]} and "
                    f"{target_images[i].size}; rollouts of one group must share one target image"
                )
            images[i] = image

        # PIL resizes release the GIL, so targets and renders are tiled on a few host threads.
        with ThreadPoolExecutor(max_workers=max(1, cfg.host_threads)) as threads:
            target_jobs = {
                key: threads.submit(tile_image, target_images[i], **tile_kw) for key, i in first_of_group.items()
            }
            render_jobs = {
                i: threads.submit(
                    lambda im, size: tile_image(match_size(im, size), **tile_kw), im, target_images[i].size
                )
                for i, im in images.items()
            }
            target_tiles = {key: job.result() for key, job in target_jobs.items()}
            rendered_tiles = {i: job.result() for i, job in render_jobs.items()}
        del images

        for i, rendered in rendered_tiles.items():
            key = groups[i]
            target = target_tiles[key]
            crop_w = target.crop_weights(cfg.coarse_weight, cfg.fine_weight)
            stats["reference_crops"] += 2 * target.count
            scored[i] = True
            same = [np.array_equal(rendered.crops[k], target.crops[k]) for k in range(target.count)]
            all_identical[i] = all(same)
            for k in range(target.count):
                if same[k]:
                    identical.append((i, key, k, crop_w[k]))
                    stats["identical_crops_skipped"] += 1
                    continue
                render_crops.append(rendered.crops[k])
                pair_keys.append((key, k))
                segment.append(i)
                weight.append(crop_w[k])
                needed.setdefault(key, 0)

        # device: encode the needed target crops once per group
        if render_crops:
            rows, offset = [], 0
            for key in needed:
                needed[key] = offset
                rows.append(target_tiles[key].crops)
                offset += target_tiles[key].count
            target_crops = np.concatenate(rows)
            total_rows = _bucket(len(target_crops), cfg.crop_buckets)
            if len(target_crops) > cfg.crop_buckets[-1]:
                total_rows = cfg.crop_buckets[-1] * math.ceil(len(target_crops) / cfg.crop_buckets[-1])
            target_feats = self.encode_crops(target_crops, stats)
            if target_feats.shape[0] < total_rows:
                target_feats = jnp.pad(target_feats, ((0, total_rows - target_feats.shape[0]), (0, 0)))
            stats["target_crops_encoded"] = len(target_crops)
            pairs = np.asarray([needed[key] + k for key, k in pair_keys], np.int32)
            seg = np.asarray(segment, np.int32)
            wts = np.asarray(weight, np.float32)
            crops = np.stack(render_crops)
            acc = jnp.zeros((_pow2(n), 2) if weighted else (_pow2(n),), jnp.float32)
            for start, stop, size in self._chunks(len(crops)):
                m = stop - start
                batch = np.zeros((size, *crops.shape[1:]), np.uint8)
                batch[:m] = crops[start:stop]
                p = np.zeros((size,), np.int32)
                s = np.zeros((size,), np.int32)
                w = np.zeros((size,), np.float32)  # weight 0 masks the padding rows out
                p[:m], s[:m], w[:m] = pairs[start:stop], seg[start:stop], wts[start:stop]
                acc = self._score_chunk(
                    self.encoder.params,
                    self._put(batch),
                    target_feats,
                    jnp.asarray(p),
                    jnp.asarray(s),
                    jnp.asarray(w),
                    acc,
                )
                stats["encoder_calls"] += 1
                stats["padded_crops"] += size - m
            stats["render_crops_encoded"] = len(crops)
            acc = np.asarray(acc, np.float64)[:n]
            if weighted:
                numerator, denominator = acc[:, 0].copy(), acc[:, 1].copy()
                mass = np.asarray(self._target_mass(target_feats), np.float64)
                for i, key, k, w in identical:
                    if all_identical[i]:  # scored exactly 1 below; its group may have no encoded target
                        continue
                    numerator[i] += w * mass[needed[key] + k]
                    denominator[i] += w * mass[needed[key] + k]
                visual += numerator / np.maximum(denominator, 1e-12)
            else:
                visual += acc
        if not weighted:
            for i, _, _, w in identical:
                visual[i] += w
        visual[all_identical] = 1.0  # exact, whatever the rounding of the crop weights' sum
        visual = np.where(scored, visual, 0.0)

        stats["target_crops_saved"] = stats["reference_crops"] // 2 - stats["target_crops_encoded"]
        encoded = stats["target_crops_encoded"] + stats["render_crops_encoded"]
        stats["encoder_work_saved"] = 1.0 - encoded / stats["reference_crops"] if stats["reference_crops"] else 0.0
        stats["encoder"] = self.encoder_label
        for key in ("encoder_calls", "target_crops_encoded", "target_crops_saved"):
            self.totals[key] += stats[key]
        return self._combine(parsed, visual, scored, stats, statuses)

    def _combine(
        self,
        parsed: Sequence[ParsedResponse],
        visual: np.ndarray,
        scored: np.ndarray,
        stats: dict[str, Any],
        statuses: list[str],
    ) -> RewardBatch:
        fmt = np.asarray([p.format for p in parsed], np.float64)
        terms = {
            "format": fmt,
            "visual": visual,
            "accuracy": visual,
            "execution": (visual > 0).astype(np.float64),
        }
        if not self.config.fold_alignment_into_format:
            terms["alignment"] = np.asarray([p.alignment for p in parsed], np.float64)
        total = np.zeros_like(visual)
        for name, w in self.config.term_weights:
            if name not in terms:
                raise ValueError(
                    f"term {name!r} is only defined with fold_alignment_into_format=False (released: folded)"
                )
            total = total + w * terms[name]
        return RewardBatch(total=total, terms=terms, stats=stats, statuses=statuses)

    # ---------------------------------------------------------------- rendering convenience
    def render_jobs(self, prompts: Sequence[str], responses: Sequence[str], options: dict | None = None) -> list:
        """A renderers.RenderJob per rollout that has code to render, None for the others."""
        from renderers import RenderJob

        jobs = []
        for i, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
            item = parse_response(prompt, response, self.config.fold_alignment_into_format)
            jobs.append(
                None
                if item.code is None
                else RenderJob(code=item.code, language=item.render_language, options=dict(options or {}), id=str(i))
            )
        return jobs

    def score_with_pool(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        target_images: Sequence[Image.Image],
        pool: Any,
        group_ids: Sequence[Hashable] | None = None,
        options: dict | None = None,
    ) -> RewardBatch:
        """Render every rollout that has code through a renderers.RenderPool, then `score`."""
        jobs = self.render_jobs(prompts, responses, options)
        todo = [job for job in jobs if job is not None]
        done = iter(pool.render_batch(todo) if todo else [])
        results = [None if job is None else next(done) for job in jobs]
        return self.score(prompts, responses, target_images, results, group_ids)
