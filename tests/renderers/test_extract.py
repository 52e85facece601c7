import pytest

from renderers import extract_code, language_from_prompt


@pytest.mark.parametrize(
    ("prompt", "language"),
    [
        ("Write matplotlib code for this chart.", "python"),
        ("Convert the image into HTML and CSS.", "html"),
        ("Give the SVG for this icon, not html.", "svg"),  # svg precedes html in the order
        ("Reproduce the figure with TikZ.", "latex"),
        ("Write LaTeX (tikz) code.", "latex"),
        ("Write python code, or HTML if you must.", "html"),
        ("Draw a MERMAID diagram.", "mermaid"),
        ("Describe the picture.", "python"),
    ],
)
def test_language_from_prompt_follows_reference_order(prompt, language):
    assert language_from_prompt(prompt) == language


def test_extract_code_takes_last_block_of_the_language():
    response = "intro\n```python\nfirst()\n```\ntext\n```html\n<p>x</p>\n```\n```python\nsecond()\n```\nbye"
    assert extract_code(response, "python") == "second()\n"
    assert extract_code(response, "html") == "<p>x</p>\n"
    assert extract_code(response, "latex") is None
    assert extract_code("no fences at all", "python") is None
