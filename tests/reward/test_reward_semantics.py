"""Failure paths, identical images, target-feature reuse, terms and the offline similarity."""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

import jax
import numpy as np
import pytest
from PIL import Image

from vinci_jax.reward.config import ENCODER_OFFLINE, RewardConfig
from vinci_jax.reward.encoders import Dinov2Encoder, OfflineEncoder, build_encoder
from vinci_jax.reward.visual import VisualReward

PY_PROMPT = "Generate python matplotlib code for this chart."
PY_RESPONSE = "Sure.\n```python\nimport matplotlib.pyplot as plt\nplt.plot([1, 2])\n```"


@dataclass
class FakeResult:
    """A RenderResult-shaped record (the renderers contract: status, png, error)."""

    status: str
    png: bytes | None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _png_claiming_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height (PIL reads the size without decoding the pixels)."""
    data = bytearray(_png(Image.new("RGB", (1, 1))))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return bytes(data)


@pytest.fixture(scope="module")
def offline_reward():
    return VisualReward(RewardConfig(encoder=ENCODER_OFFLINE, crop_buckets=(16,)))


def test_failure_paths_are_exactly_0_and_0_1(offline_reward, draw):
    target = draw(400, 300, 0)
    cases = [
        ("no fenced block", "plt.plot([1, 2])", None, 0.0),
        ("block in another language", "```html\n<p>x</p>\n```", FakeResult("ok", _png(target)), 0.0),
        ("render error", PY_RESPONSE, FakeResult("error", None, "SyntaxError"), 0.1),
        ("render timeout", PY_RESPONSE, FakeResult("timeout", None, "10 s"), 0.1),
        ("worker crashed", PY_RESPONSE, FakeResult("crashed", None), 0.1),
        ("unsupported language", PY_RESPONSE, FakeResult("unsupported", None), 0.1),
        ("unreadable image", PY_RESPONSE, FakeResult("ok", b"\x89PNG not really"), 0.1),
        ("over 83,000,000 pixels", PY_RESPONSE, FakeResult("ok", _png_claiming_size(10_000, 8_301)), 0.1),
        ("not rendered at all", PY_RESPONSE, None, 0.1),
    ]
    batch = offline_reward.score(
        [PY_PROMPT] * len(cases), [c[1] for c in cases], [target] * len(cases), [c[2] for c in cases]
    )
    for (name, *_, expected), total in zip(cases, batch.total, strict=True):
        assert total == expected, name
    assert batch.terms["execution"].sum() == 0 and batch.terms["visual"].sum() == 0
    np.testing.assert_array_equal(batch.terms["format"], [0, 0, 1, 1, 1, 1, 1, 1, 1])
    assert batch.statuses[:3] == ["no_code", "no_code", "render_error"] and batch.statuses[7] == "too_big"


def test_a_picture_exactly_at_the_pixel_limit_is_scored(offline_reward):
    config = RewardConfig(encoder=ENCODER_OFFLINE, max_render_pixels=100 * 80, crop_buckets=(16,))
    reward = VisualReward(config, encoder=offline_reward.encoder)
    target = Image.new("RGB", (100, 80), (200, 10, 10))
    ok = reward.score([PY_PROMPT], [PY_RESPONSE], [target], [Image.new("RGB", (100, 80), (0, 0, 0))])
    big = reward.score([PY_PROMPT], [PY_RESPONSE], [target], [Image.new("RGB", (101, 80), (0, 0, 0))])
    assert ok.terms["execution"][0] == 1 and big.total[0] == 0.1


def test_identical_render_gives_visual_exactly_one(tiny_dinov2, draw):
    path, _ = tiny_dinov2
    reward = VisualReward(RewardConfig(encoder_path=path, crop_buckets=(16,)))
    target = draw(1000, 600, 3)
    same_png = FakeResult("ok", _png(target))
    batch = reward.score([PY_PROMPT] * 2, [PY_RESPONSE] * 2, [target] * 2, [same_png, target.copy()])
    np.testing.assert_array_equal(batch.terms["visual"], [1.0, 1.0])
    np.testing.assert_array_equal(batch.total, [1.0, 1.0])
    assert batch.stats["identical_crops_skipped"] == 14 and batch.stats["render_crops_encoded"] == 0


class CountingEncoder:
    """Wraps an encoder and counts, at run time, every call and every row it encodes (padding included)."""

    def __init__(self, inner):
        self.inner, self.name, self.params = inner, inner.name, inner.params
        self.calls, self.rows = 0, 0

    def _record(self, rows):
        self.calls += 1
        self.rows += int(rows)

    def features(self, params, crops):
        jax.debug.callback(self._record, crops.shape[0])
        return self.inner.features(params, crops)

    def similarity(self, a, b):
        return self.inner.similarity(a, b)


def test_target_features_are_computed_once_per_group(tiny_dinov2, draw):
    path, _ = tiny_dinov2
    encoder = CountingEncoder(Dinov2Encoder.from_pretrained(path))
    reward = VisualReward(RewardConfig(encoder_path=path, crop_buckets=(8, 32)), encoder=encoder)
    targets = [draw(640, 480, 1), draw(336, 336, 2)]  # 13 and 1 crops
    n = 4
    prompts, responses, images, renders, groups = [], [], [], [], []
    for g, target in enumerate(targets):
        for r in range(n):
            prompts.append(PY_PROMPT)
            responses.append(PY_RESPONSE)
            images.append(target)
            renders.append(draw(*target.size, seed=50 + 10 * g + r))
            groups.append(f"prompt-{g}")
    batch = reward.score(prompts, responses, images, renders, groups)
    stats = batch.stats
    assert stats["target_crops_encoded"] == 13 + 1  # once per group, not once per rollout
    assert stats["render_crops_encoded"] == n * (13 + 1)
    assert stats["target_crops_saved"] == (n - 1) * (13 + 1)
    assert stats["reference_crops"] == 2 * n * (13 + 1)
    assert stats["encoder_work_saved"] == pytest.approx(1 - (14 + 56) / 112)
    # independent count of what really ran on the device: 14 target rows in one 32-bucket, 56 render rows in
    # two chunks (32 + 24 -> 32)
    assert encoder.calls == stats["encoder_calls"] == 3
    assert encoder.rows == 32 + 32 + 32 == 14 + 56 + stats["padded_crops"]
    # same rewards when every rollout is scored alone (no sharing, no packing)
    for i in (0, 5):
        alone = reward.score([prompts[i]], [responses[i]], [images[i]], [renders[i]])
        np.testing.assert_allclose(alone.total, batch.total[i : i + 1], atol=1e-6)


def test_coarse_fine_weights_and_alignment_term(draw):
    target, render = draw(1000, 600, 7), draw(1000, 600, 8)
    base = RewardConfig(encoder=ENCODER_OFFLINE, crop_buckets=(8,))
    encoder = OfflineEncoder()
    mean = VisualReward(base, encoder).score([PY_PROMPT], [PY_RESPONSE], [target], [render])
    coarse = VisualReward(
        RewardConfig(encoder=ENCODER_OFFLINE, crop_buckets=(8,), coarse_weight=1.0, fine_weight=0.0), encoder
    ).score([PY_PROMPT], [PY_RESPONSE], [target], [render])
    thumb_only = VisualReward(RewardConfig(encoder=ENCODER_OFFLINE, crop_buckets=(8,), max_tiles=1), encoder).score(
        [PY_PROMPT], [PY_RESPONSE], [target], [render]
    )  # 1 tile == the 448 resize of the whole image
    np.testing.assert_allclose(coarse.terms["visual"], thumb_only.terms["visual"], atol=1e-6)
    assert abs(mean.terms["visual"][0] - coarse.terms["visual"][0]) > 1e-4

    unfolded = RewardConfig(
        encoder=ENCODER_OFFLINE,
        crop_buckets=(8,),
        fold_alignment_into_format=False,
        term_weights=(("visual", 0.8), ("format", 0.1), ("alignment", 0.1)),
    )
    svg_response = "```svg\n<svg/>\n```"
    batch = VisualReward(unfolded, encoder).score(
        [PY_PROMPT, PY_PROMPT], [PY_RESPONSE, svg_response], [target] * 2, [render, None]
    )
    np.testing.assert_array_equal(batch.terms["format"], [1, 1])
    np.testing.assert_array_equal(batch.terms["alignment"], [1, 0])
    assert batch.total[1] == pytest.approx(0.1)
    jobs = VisualReward(unfolded, encoder).render_jobs([PY_PROMPT], [svg_response])
    assert jobs[0].language == "svg"


def test_offline_similarity_is_bounded_and_ranks_closer_images_higher(draw):
    import jax.numpy as jnp

    encoder = OfflineEncoder()
    base = np.asarray(draw(448, 448, 1))
    shifted = np.roll(base, 6, axis=1)
    other = np.asarray(draw(448, 448, 2))
    crops = jnp.asarray(np.stack([base, shifted, other]))
    feats = encoder.features(encoder.params, crops)
    s = np.asarray(encoder.similarity(jnp.repeat(feats[:1], 3, axis=0), feats))
    assert s[0] == pytest.approx(1.0, abs=1e-6)
    assert 1.0 > s[1] > s[2] >= 0.0


def test_config_is_fillable_from_ml_collections_and_never_silently_random():
    config = RewardConfig().to_config()
    config.encoder = ENCODER_OFFLINE
    config.compute_dtype = "bfloat16"
    config.term_weights = {"visual": 0.5, "format": 0.5}
    filled = RewardConfig.from_config(config)
    assert filled.encoder == ENCODER_OFFLINE and filled.weights == {"visual": 0.5, "format": 0.5}
    with pytest.raises(ValueError, match="encoder_path"):
        build_encoder(RewardConfig())
    with pytest.raises(ValueError, match="unknown"):
        RewardConfig(feature="mean_patch")


def test_sharded_batch_over_a_mesh_gives_the_same_rewards(offline_reward, draw):
    from vinci_jax import sharding

    mesh = sharding.make_mesh({"data": -1})
    assert mesh.shape["data"] == 8
    reward = VisualReward(offline_reward.config, encoder=offline_reward.encoder, mesh=mesh)
    target = draw(640, 480, 21)
    renders = [draw(640, 480, 22), draw(320, 240, 23)]
    with jax.set_mesh(mesh):
        sharded = reward.score([PY_PROMPT] * 2, [PY_RESPONSE] * 2, [target] * 2, renders, ["g", "g"])
    plain = offline_reward.score([PY_PROMPT] * 2, [PY_RESPONSE] * 2, [target] * 2, renders, ["g", "g"])
    np.testing.assert_allclose(sharded.total, plain.total, atol=1e-5)  # float32 reductions split across devices
    with pytest.raises(ValueError, match="share one target"):
        offline_reward.score([PY_PROMPT] * 2, [PY_RESPONSE] * 2, [target, draw(300, 300, 1)], renders, ["g", "g"])
