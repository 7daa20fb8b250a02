"""Validate a file whose kind its top-level keys tell (``campaign validate``, ``campaign pin``):
a campaign, a training spec, a recipe or a brand kit, each by its own module.
"""

from __future__ import annotations

from pathlib import Path

from renderer.core.errors import SchemaError
from renderer.load.yamlsource import YamlDocument, load_yaml
from renderer.validate.brand import validate_brand_kit
from renderer.validate.campaign import validate_campaign
from renderer.validate.inputs import BrandKit, Campaign, Recipe
from renderer.validate.recipe import validate_recipe
from renderer.validate.training import validate_training
from renderer.validate.training_spec import TrainingSpec


def load_any(
    path: Path, *, verify_hashes: bool = True
) -> Recipe | Campaign | BrandKit | TrainingSpec:
    """Load and validate a file whose kind is told by its keys (``campaign validate``)."""
    return validate_any(load_yaml(path), verify_hashes=verify_hashes)


def validate_any(
    document: YamlDocument, *, verify_hashes: bool = True
) -> Recipe | Campaign | BrandKit | TrainingSpec:
    """Validate a loaded file whose kind is told by its keys."""
    keys = set(document.data) if isinstance(document.data, dict) else set()
    if "matrix" in keys:
        return validate_campaign(document, verify_hashes=verify_hashes)
    if "dataset" in keys or "base" in keys:  # before recipes: a training spec names a family
        return validate_training(document, verify_hashes=verify_hashes)
    if "family" in keys or "checkpoint" in keys:
        return validate_recipe(document, verify_hashes=verify_hashes)
    if "logo" in keys:
        return validate_brand_kit(document, verify_hashes=verify_hashes)
    raise SchemaError(
        "cannot tell what kind of file this is",
        file=document.path,
        line=1,
        expected="a campaign (has 'matrix'), a training spec (has 'dataset'), a recipe (has "
        "'family') or a brand kit (has 'logo')",
        found=f"top-level keys: {sorted(map(str, keys)) or 'none'}",
    )
