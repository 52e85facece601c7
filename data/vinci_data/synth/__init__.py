"""Synthetic five-domain image -> code corpus (charts, SVG, web pages, TikZ, molecules), rendered by `renderers`."""

from vinci_data.synth.build import (
    DOMAIN_REGISTRY,
    Candidate,
    SynthConfig,
    build_synth,
    ensure_synth,
    make_candidate,
)

__all__ = ["DOMAIN_REGISTRY", "Candidate", "SynthConfig", "build_synth", "ensure_synth", "make_candidate"]
