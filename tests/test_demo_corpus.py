"""The demo's simpler program distribution (`SynthConfig.simple`): a fixed number of elements per picture, so the
policy can learn where a program ends, and the default corpus is left as it was."""

import re

import pytest
from vinci_data.synth import DOMAIN_REGISTRY, SynthConfig, make_candidate

SEEDS = range(40)


def _simple_codes(domain: str) -> list[str]:
    config = SynthConfig(size=len(SEEDS) * 5, seed=1, domains=(domain,), refine_fraction=0.3, simple=True)
    return [make_candidate(config, i).code for i in SEEDS]


def test_simple_samples_are_generate_tasks_at_difficulty_zero():
    config = SynthConfig(size=50, seed=2, refine_fraction=0.5, difficulty_weights=(0.0, 0.0, 1.0), simple=True)
    candidates = [make_candidate(config, i) for i in range(50)]
    assert {c.difficulty for c in candidates} == {0}
    assert {c.domain for c in candidates} == set(DOMAIN_REGISTRY)


@pytest.mark.parametrize(
    ("domain", "pattern", "count"),
    [
        ("chart", r"^ax\.(bar|barh|plot|pie)\(", 1),
        ("svg", r"^  <(rect x=|circle |ellipse |line )", 2),
        ("web", r'^    <div class="block"', 2),
    ],
)
def test_simple_programs_have_a_fixed_element_count(domain, pattern, count):
    for code in _simple_codes(domain):
        assert len(re.findall(pattern, code, flags=re.M)) == count, code


def test_simple_charts_have_four_values_and_no_text_but_ticks():
    for code in _simple_codes("chart"):
        values = re.search(r"\((?:x \+ [-0-9.]+, |\[[^]]*\], )?\[([0-9, ]+)\]", code)
        assert values and len(values.group(1).split(",")) == 4, code
        assert not re.search(r"set_(title|xlabel|ylabel)|legend\(|grid\(", code), code


def test_simple_tikz_is_two_shapes_or_one_plot():
    for code in _simple_codes("tikz"):
        shapes = len(re.findall(r"^  \\(filldraw|fill|node)\[", code, flags=re.M))
        plots = re.findall(r"^  \\addplot\[[^]]*\] (coordinates \{([^}]*)\}|\{)", code, flags=re.M)
        assert (shapes, len(plots)) in ((2, 0), (0, 1)), code
        assert "->" not in code and r"\legend" not in code and "title=" not in code, code
        if plots and plots[0][1]:
            assert plots[0][1].count("(") == 5, code


def test_simple_web_pages_carry_only_the_css_they_use():
    for code in _simple_codes("web"):
        assert not re.search(r"^  (nav|button|footer|\.block p) \{", code, flags=re.M), code
        assert "<nav>" not in code and "<footer>" not in code


def test_the_default_corpus_does_not_change_with_the_knob_off():
    plain = SynthConfig(size=30, seed=4)
    assert not plain.simple
    codes = [make_candidate(plain, i).code for i in range(30)]
    assert any("set_title" in c or "<nav>" in c or "->" in c for c in codes)  # the harder levels still appear
    assert all("compact" not in c for c in codes)
