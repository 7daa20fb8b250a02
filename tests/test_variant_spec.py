"""The variant spec is the one source of a variant's identity: its id, batch key, render
call and metadata all derive from it, and its JSON reads back to the same spec."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from renderer.core.hashing import canonical_json, sha256_path
from renderer.load.yamlsource import YamlDocument
from renderer.plan.variant_spec import VariantSpec, batch_key, render_call, spec_problem, variant_id
from renderer.plan.variants import make_plan
from renderer.produce.metadata import a1111_parameters, read_png_metadata
from renderer.run.execute import render_campaign
from renderer.validate.campaign import validate_campaign

from .conftest import REPO, ledger_rows

MODELS = REPO / "models" / "demo"
BRAND = REPO / "campaigns" / "brands" / "kestrel"
RECIPE_BLOCKS = {
    "text": {},
    "controlnet": {
        "controlnets": [
            {
                "model": "controlnet-sd15",
                "image": "{{ product }}.png",
                "preprocessor": "canny",
                "scale": 0.7,
            }
        ]
    },
    "ip_adapter": {
        "ip_adapter": {"model": "ip-adapter-sd15", "scale": 0.5, "images": ["{{ product }}.png"]}
    },
    "ip_adapter_brand": {"ip_adapter": {"model": "ip-adapter-sd15"}},
    "img2img": {"img2img": {"image": "{{ product }}.png", "strength": 0.6}},
    "inpaint": {
        "inpaint": {
            "image": "{{ product }}.png",
            "region": [0.1, 0.2, 0.8, 0.9],
            "strength": 0.9,
            "source_is_photo": True,
        }
    },
}


def model(name: str) -> dict:
    return {"path": str(MODELS / name), "sha256": sha256_path(MODELS / name)}


@pytest.fixture(scope="module")
def folder(tmp_path_factory, demo_models) -> Path:
    """One recipe per control block beside copies of the brand references."""
    root = tmp_path_factory.mktemp("specs")
    for image in BRAND.glob("reference-*.png"):
        shutil.copy(image, root / image.name)
    (root / "recipes").mkdir()
    for name, block in RECIPE_BLOCKS.items():
        recipe = {
            "name": name.replace("_", "-"),
            "version": 1,
            "family": "sd15",
            "checkpoint": model("sd15-inpaint" if name == "inpaint" else "sd15"),
            "loras": [{**model("lora-style.safetensors"), "weight": 0.6}],
            "scheduler": "euler",
            "steps": 4,
            "cfg": 5.0,
            "size": [64, 64],
            "seed": 3,
            "prompt": "a {{ product }} on {{ background }}",
            "negative_prompt": "dull",
        }
        for key, value in json.loads(json.dumps(block)).items():
            models = value if isinstance(value, list) else [value]
            for item in models:
                if "model" in item:
                    item["model"] = model(item["model"])
            recipe[key] = value
        (root / "recipes" / f"{recipe['name']}.yaml").write_text(yaml.safe_dump(recipe))
    return root


products = st.lists(
    st.sampled_from(["reference-1", "reference-2", "reference-3"]),
    min_size=1,
    max_size=3,
    unique=True,
)
retouch = st.lists(
    st.sampled_from(
        [
            {"sharpen": {"amount": 0.5}},
            {"white_balance": {}},
            {"brand_grade": {"strength": 0.3}},
            {"denoise": {"radius": 1}},
        ]
    ),
    max_size=2,
)
overrides = st.lists(
    st.fixed_dictionaries(
        {
            "when": st.sampled_from([{"background": "studio"}, {"seed": 2}]),
            "set": st.fixed_dictionaries(
                {},
                optional={
                    "steps": st.integers(1, 6),
                    "cfg": st.floats(0, 12).map(lambda x: round(x, 2)),
                    "lora_weights": st.fixed_dictionaries(
                        {"lora-style": st.sampled_from([0.0, 0.3, 1.2])}
                    ),
                },
            ),
        }
    ),
    max_size=2,
)


EXPORT_SIZES = {"1:1": (96, 96), "9:16": (54, 96), "16:9": (96, 54)}


@st.composite
def campaigns(draw) -> dict:
    aspects = draw(
        st.lists(st.sampled_from(["1:1", "9:16", "16:9"]), min_size=1, max_size=2, unique=True)
    )
    recipe = draw(st.sampled_from(list(RECIPE_BLOCKS))).replace("_", "-")
    campaign = {
        "name": "props",
        "recipe": f"{recipe}@1",
        "recipes_dir": "recipes",
        "brand": str(BRAND / "brand.yaml"),
        "size": {"axis": "aspect", "short_side": 64},
        "matrix": {
            "axes": {
                "product": draw(products),
                "background": ["studio", "beach"],
                "aspect": aspects,
                "seed": [1, 2],
            }
        },
        "output": "{{ product }}-{{ background }}-{{ aspect | replace(':', 'x') }}-{{ seed }}",
        "logo": draw(st.booleans()),
        "overrides": draw(overrides),
        "postprocess": {"retouch": draw(retouch)},
        "scoring": {"clip_model": str(MODELS / "clip")},
    }
    if draw(st.booleans()):
        campaign["postprocess"]["text"] = {"headline": "No. {{ product[-1] }}"}
    if draw(st.booleans()):
        # Each aspect's export of its own aspect: another's crop could cut the marks away.
        campaign["postprocess"]["exports"] = {
            aspect: [{"name": "web", "width": width, "height": height, "format": "webp"}]
            for aspect, (width, height) in EXPORT_SIZES.items()
            if aspect in aspects
        }
        campaign["postprocess"]["upscale_exports"] = True  # larger than the 32-64 px masters
    return campaign


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=campaigns())
def test_spec_json_spec_gives_the_same_id_and_the_same_render_call(folder, data):
    document = YamlDocument(folder / "campaign.yaml", yaml.safe_dump(data), data, {})
    plan = make_plan(validate_campaign(document))
    for variant in plan.variants:
        stored = canonical_json(variant.spec.to_json())
        assert variant.spec_json == stored  # the planner's fast encoding is the spec's JSON
        again = VariantSpec.from_json(stored)
        assert variant_id(again) == variant.id
        assert canonical_json(again.to_json()) == stored
        assert spec_problem(json.loads(stored)) is None
        assert render_call([again]) == render_call([variant.spec])
        assert batch_key(again) == batch_key(variant.spec)
        hashes = ["0" * 64] * len(again.recipe.loras)
        assert a1111_parameters(again, hashes) == a1111_parameters(variant.spec, hashes)


def test_a_spec_edited_by_hand_is_not_a_spec(folder):
    data = {
        "name": "one",
        "recipe": "text@1",
        "recipes_dir": "recipes",
        "brand": str(BRAND / "brand.yaml"),
        "matrix": {"axes": {"product": ["reference-1"], "background": ["studio"]}},
        "output": "{{ product }}",
        "scoring": {"clip_model": str(MODELS / "clip")},
    }
    document = YamlDocument(folder / "c.yaml", "", data, {})
    stored = make_plan(validate_campaign(document)).variants[0].spec.to_json()
    assert spec_problem({**stored, "recipe": {**stored["recipe"], "steps": 1000000}}).startswith(
        "recipe.steps: Input should be less than or equal to 200"
    )
    assert "extra" in spec_problem({**stored, "extra": 1})
    assert "same JSON" in spec_problem({**stored, "recipe": {**stored["recipe"], "cfg": 5}})


def ip_adapter_campaign(folder: Path, batch_size: int | str) -> Path:
    campaign = {
        "name": "refs",
        "recipe": "ip-adapter@1",
        "recipes_dir": "recipes",
        "brand": str(BRAND / "brand.yaml"),
        "matrix": {
            "axes": {
                "product": ["reference-1", "reference-2", "reference-3"],
                "background": ["studio"],
            }
        },
        "output": "{{ product }}",
        "logo": False,
        "scoring": {"clip_model": str(MODELS / "clip")},
        "render": {"batch_size": batch_size},
    }
    path = folder / f"refs-{batch_size}.yaml"
    path.write_text(yaml.safe_dump(campaign))
    return path


def test_templated_ip_adapter_images_render_the_file_each_variant_names(folder):
    """Each product has its own IP-Adapter reference: a batch never shares a pipeline call
    between two references, so batch size 1, 2 and auto give the same pixels, and each
    image's metadata names the reference that made it."""
    renders = {}
    for batch_size in (1, 2, "auto"):
        out = folder / f"out-{batch_size}"
        render_campaign(
            ip_adapter_campaign(folder, batch_size), out, log=lambda _: None, show_progress=False
        )
        renders[batch_size] = {
            path.stem: path.read_bytes()
            for path in sorted((out / "refs" / "ip-adapter@1").glob("*.png"))
        }
        batches = [
            json.loads(batch) for (batch,) in ledger_rows(out, "SELECT batch_json FROM renders")
        ]
        assert all(len(batch) == 1 for batch in batches)  # three references: three calls
    assert renders[1] == renders[2] == renders["auto"]
    for product, data in renders[1].items():
        spec = read_png_metadata(data)["variant"]
        assert spec["images"]["ip_adapter.images.0"]["name"] == f"{product}.png"
    pixels = {
        name: np.asarray(Image.open(io.BytesIO(data)), dtype=np.int16)
        for name, data in renders[1].items()
    }
    assert np.abs(pixels["reference-1"] - pixels["reference-2"]).max() > 0
