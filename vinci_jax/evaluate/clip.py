"""CLIP image-image similarity from local HF CLIP weights (Design2Code's and UniSVG's CLIP terms).

Runs the transformers (PyTorch, CPU) CLIPModel image tower; only used when the user passes `--clip DIR`, never
downloaded. Score: cosine similarity of the two image embeddings, clipped to [0, 1] (Design2Code reports it so).
"""

from __future__ import annotations

from PIL import Image


class ClipScorer:
    def __init__(self, path: str) -> None:
        from transformers import CLIPImageProcessor, CLIPModel

        self.model = CLIPModel.from_pretrained(path, local_files_only=True).eval()
        self.processor = CLIPImageProcessor.from_pretrained(path, local_files_only=True)

    def score(self, a: Image.Image, b: Image.Image) -> float:
        import torch

        inputs = self.processor(images=[a.convert("RGB"), b.convert("RGB")], return_tensors="pt")
        with torch.no_grad():
            feats = self.model.get_image_features(pixel_values=inputs["pixel_values"])
        if not isinstance(feats, torch.Tensor):  # transformers >= 5: an output whose pooler_output is projected
            feats = feats.pooler_output
        feats = torch.nn.functional.normalize(feats, dim=-1)
        return float(max(0.0, min(1.0, float((feats[0] * feats[1]).sum()))))
