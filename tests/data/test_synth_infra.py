"""The synthetic-data build stops, naming the cause, when the renderer (not the generated code) fails."""

from __future__ import annotations

import pytest
from vinci_data.synth import SynthConfig, build_synth

from renderers import RenderInfraError, RenderPool, sandbox


@pytest.mark.skipif(not sandbox.is_root(), reason="the broken sandbox (an unmountable job tmpfs) needs root")
def test_build_stops_on_renderer_failures_instead_of_redrawing(tmp_path):
    config = SynthConfig(size=4, seed=1, domains=("chart",), refine_fraction=0.0)
    broken = sandbox.Limits(tmpfs_mb=-1)  # every python job's sandbox setup fails (mount: EINVAL)
    with RenderPool(num_workers=1, languages=["python"], timeout_s=20.0, limits=broken) as pool:
        with pytest.raises(RenderInfraError, match=r"4 of 4 renders .*first batch.*python: sandbox setup failed"):
            build_synth(str(tmp_path / "out"), config, render_batch=pool.render_batch)
