"""Properties of the matrix language and the loader, checked with hypothesis."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from renderer.core.errors import InputError
from renderer.load.yamlsource import YamlDocument, load_yaml
from renderer.plan.variants import make_plan
from renderer.validate.any_kind import load_any
from renderer.validate.campaign import validate_campaign
from renderer.validate.matrix import matches

from .conftest import REPO, run_cli

WORDS = ["red", "blue", "green", "studio", "beach", "city", "night", "dawn", "snow"]


@pytest.fixture(scope="module")
def base_campaign(tmp_path_factory, demo_models):
    """A campaign over axes a (ints), b (words), c (mappings) with a static prompt."""
    root = tmp_path_factory.mktemp("props")
    recipe = yaml.safe_load((REPO / "recipes" / "demo-sd15.yaml").read_text())
    for ref in [recipe["checkpoint"], *recipe["loras"]]:
        ref["path"] = str((REPO / "recipes" / ref["path"]).resolve())
    recipe["checkpoint"]["config"] = str((REPO / "models" / "demo" / "sd15").resolve())
    recipe.update(name="props", prompt="photo of {{ b }} {{ c.name }}", negative_prompt="")
    (root / "recipes").mkdir()
    (root / "recipes" / "props.yaml").write_text(yaml.safe_dump(recipe))
    campaign = {
        "name": "props",
        "recipe": "props@1",
        "recipes_dir": str(root / "recipes"),
        "brand": str(REPO / "campaigns" / "brands" / "kestrel" / "brand.yaml"),
        "matrix": {"axes": {"a": [1], "b": ["red"], "c": [{"name": "x", "n": 1}]}},
        "output": "{{ a }}-{{ b }}-{{ c.name }}",
        "scoring": {"clip_model": str(demo_models / "clip")},
    }
    (root / "campaign.yaml").write_text(yaml.safe_dump(campaign))
    return load_yaml(root / "campaign.yaml")


def with_matrix(document: YamlDocument, **matrix):
    """The campaign validated with another matrix (as if the file said it)."""
    changed = dataclasses.replace(document, data={**document.data, "matrix": matrix})
    return validate_campaign(changed)


axis_a = st.lists(st.integers(0, 50), min_size=1, max_size=4, unique=True)
axis_b = st.lists(st.sampled_from(WORDS), min_size=1, max_size=4, unique=True)
axis_c = st.lists(st.sampled_from(["x", "y", "z", "w"]), min_size=1, max_size=3, unique=True).map(
    lambda names: [{"name": name, "n": index} for index, name in enumerate(names)]
)
axes = st.fixed_dictionaries({"a": axis_a, "b": axis_b, "c": axis_c})


@st.composite
def matrices(draw):
    chosen = draw(axes)
    rules = draw(
        st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "a": st.integers(0, 50),
                    "b": st.sampled_from(WORDS),
                    "c": st.sampled_from(["x", "y", "z", "w"]).map(lambda name: {"name": name}),
                },
            ).filter(bool),
            max_size=2,
        )
    )
    includes = draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "a": st.integers(0, 60),
                    "b": st.sampled_from(WORDS),
                    "c": st.sampled_from(["x", "v"]).map(lambda name: {"name": name, "n": 9}),
                }
            ),
            max_size=3,
        )
    )
    return {"axes": chosen, "exclude": rules, "include": includes}


slow = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@slow
@given(matrix=matrices())
def test_count_is_product_less_excluded_plus_included_and_ids_unique(base_campaign, matrix):
    product = [
        dict(zip(matrix["axes"], values, strict=True))
        for values in itertools.product(*matrix["axes"].values())
    ]
    kept = [
        coords for coords in product if not any(matches(rule, coords) for rule in matrix["exclude"])
    ]
    added = []
    for entry in matrix["include"]:
        if entry not in kept and entry not in added:
            added.append(entry)
    try:
        plan = make_plan(with_matrix(base_campaign, **matrix))
    except InputError as err:  # two includes differing only in c.n share an output name
        assert "same output file" in str(err)
        return
    assert len(plan.variants) == len(kept) + len(added)
    assert len({variant.id for variant in plan.variants}) == len(plan.variants)


@slow
@given(chosen=axes, axis=st.sampled_from("abc"), data=st.data())
def test_ids_and_seeds_survive_growing_and_reordering_an_axis(base_campaign, chosen, axis, data):
    before = {v.id: v.seed for v in make_plan(with_matrix(base_campaign, axes=chosen)).variants}
    grown = {
        **chosen,
        axis: [*chosen[axis], {"a": 99, "b": "fog", "c": {"name": "q", "n": 7}}[axis]],
    }
    after = {v.id: v.seed for v in make_plan(with_matrix(base_campaign, axes=grown)).variants}
    assert before.items() <= after.items()
    reordered = {**chosen, axis: data.draw(st.permutations(chosen[axis]))}
    shuffled = {
        v.id: v.seed for v in make_plan(with_matrix(base_campaign, axes=reordered)).variants
    }
    assert shuffled == before


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "name",
                    "recipe",
                    "matrix",
                    "axes",
                    "family",
                    "logo",
                    "brand",
                    "output",
                    "steps",
                    "path",
                    "x",
                ]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=200) | yaml_values.map(yaml.safe_dump))
def test_loader_raises_only_its_own_error_on_arbitrary_text(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("fuzz") / "input.yaml"
    path.write_text(text, encoding="utf-8")
    with contextlib.suppress(InputError):
        load_any(path)


@settings(
    max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    text=st.sampled_from(
        [
            "",
            "[",
            "matrix: {axes: 3}",
            "family: 1\n\t- x",
            "logo: {}",
            ": : :",
            "recipe: a@1\nmatrix: {}\nbrand: x",
        ]
    )
)
def test_cli_never_shows_a_traceback(tmp_path: Path, text):
    path = tmp_path / "input.yaml"
    path.write_text(text)
    result = run_cli("validate", path)
    assert result.code == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ")
