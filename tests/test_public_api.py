"""The public names are promises: every import the README shows works, and the top-level
package's exports resolve to the objects their defining modules hold."""

from __future__ import annotations

import ast
import importlib
import pathlib
import re

import pclr_jax

ROOT = pathlib.Path(__file__).resolve().parents[1]


def readme_imports() -> list[ast.stmt]:
    """Every import statement in the README's Python code blocks."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return [
        node
        for block in blocks
        for node in ast.walk(ast.parse(block))
        if isinstance(node, ast.Import | ast.ImportFrom)
    ]


def test_every_import_the_readme_shows_works():
    statements = readme_imports()
    assert len(statements) >= 8
    for node in statements:
        if isinstance(node, ast.Import):
            for alias in node.names:
                importlib.import_module(alias.name)
        else:
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{node.module} has no {alias.name}"


def test_top_level_exports_are_their_defining_modules_objects():
    from pclr_jax.embedding import embedder
    from pclr_jax.model import encoder

    assert pclr_jax.load_encoder is embedder.load_encoder
    assert pclr_jax.Encoder is embedder.Encoder
    for name in ("EncoderConfig", "PCLREncoder", "PCLRModel", "ProjectionHead"):
        assert getattr(pclr_jax, name) is getattr(encoder, name)
    assert sorted(pclr_jax.__all__) == sorted(
        ["Encoder", "EncoderConfig", "PCLREncoder", "PCLRModel", "ProjectionHead", "load_encoder"]
    )
