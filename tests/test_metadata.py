"""What every PNG says about itself: A1111 `parameters` (exactly as A1111 1.10 writes it, read
back by A1111's own rules and by sd-parsers), the variant JSON, and IPTC DigitalSourceType in
XMP (read back by exiftool)."""

from __future__ import annotations

import io
import json
import subprocess

import numpy as np
import pytest
from PIL import Image
from sd_parsers import ParserManager
from sd_parsers.parsers import AUTOMATIC1111Parser

from renderer import __version__
from renderer.core.families import SCHEDULERS
from renderer.core.hashing import sha256_json
from renderer.plan.variant_spec import VariantSpec
from renderer.produce.metadata import (
    COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA,
    TRAINED_ALGORITHMIC_MEDIA,
    a1111_parameters,
    encode_png,
    parse_a1111_parameters,
    read_png_metadata,
)

from .third_party.a1111_infotext import (
    SAMPLER_DEFAULT_SCHEDULE,
    SCHEDULER_LABELS,
    TIMESTEP_SAMPLERS,
    create_infotext,
    get_hr_sampler_and_scheduler,
    get_sampler_and_scheduler,
    parse_generation_parameters,
    schedule_used,
)

CHECKPOINT_SHA = "93204beabe07a502a057472bbb7ef254beb58874e7bf72abdd307d3a975a752c"
STYLE_SHA = "46e3cf0c0fc50b8e410792f4a892ffce177124aa05947ba2f36ca06a732a312f"
BRAND_SHA = "921015bf54f0ad75a52e480e6ffc981b9780078a1b7e73acaed9c8b644440749"
# The LoRAs' A1111 ("addnet") hashes come from their files (renderer.produce.metadata.LoraHashes);
# these tests have no files, so they pass the values the text must show.
LORA_HASHES = (STYLE_SHA, BRAND_SHA)


def _spec(**changes) -> dict:
    spec = {
        "schema": 1,
        "campaign": "spring",
        "recipe": {
            "name": "look",
            "version": 3,
            "family": "sd15",
            "checkpoint": {"name": "sd15.safetensors", "sha256": CHECKPOINT_SHA},
            "loras": [
                {"name": "lora-style.safetensors", "sha256": STYLE_SHA, "weight": 0.6},
                {"name": "lora-brand.safetensors", "sha256": BRAND_SHA, "weight": 0.8},
            ],
            "scheduler": "dpmpp_2m_karras",
            "steps": 28,
            "cfg": 5.5,
            "size": [64, 64],
            "seed": 7,
            "prompt": "{{ product }}",
            "negative_prompt": "blurry",
        },
        "axes": {"product": "trail runner, orange", "seed": 1},
        "seed": 3272684508,
        "prompt": "a trail runner, orange, on a studio background",
        "negative_prompt": "blurry, low quality",
        "width": 112,
        "height": 64,
        "postprocess": {"logo": None},
    }
    spec.update(changes)
    return spec


def typed(spec: dict) -> VariantSpec:
    return VariantSpec.from_json(spec)


def _png(spec: dict) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (spec["height"], spec["width"], 3))
    hashes = LORA_HASHES[: len(spec["recipe"]["loras"])]
    return encode_png(Image.fromarray(pixels.astype(np.uint8)), typed(spec), hashes)


def test_parameters_text_is_a1111s_exact_layout():
    assert a1111_parameters(typed(_spec()), LORA_HASHES) == (
        "a trail runner, orange, on a studio background <lora:lora-style:0.6> "
        "<lora:lora-brand:0.8>\n"
        "Negative prompt: blurry, low quality\n"
        "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 5.5, Seed: 3272684508, "
        "Size: 112x64, Model hash: 93204beabe, Model: sd15, "
        'Lora hashes: "lora-style: 46e3cf0c0fc5, lora-brand: 921015bf54f0", '
        f"Version: campaign-renderer {__version__}"
    )


def test_parameters_without_negative_prompt_or_loras():
    spec = _spec(negative_prompt="")
    spec["recipe"]["loras"] = []
    text = a1111_parameters(typed(spec))
    assert "Negative prompt" not in text and "Lora hashes" not in text
    assert text.split("\n")[0] == spec["prompt"]


def test_parameters_parse_back_to_every_setting():
    spec = _spec()
    parsed = read_png_metadata(_png(spec))["parameters"]
    assert parsed["prompt"] == spec["prompt"]
    assert parsed["negative_prompt"] == spec["negative_prompt"]
    assert parsed["Steps"] == "28"
    assert (parsed["Sampler"], parsed["Schedule type"]) == ("DPM++ 2M", "Karras")
    assert float(parsed["CFG scale"]) == 5.5
    assert parsed["Seed"] == "3272684508"
    assert parsed["Size"] == "112x64"
    assert parsed["Model hash"] == CHECKPOINT_SHA[:10]
    assert parsed["Model"] == "sd15"
    assert parsed["loras"] == {"lora-style": 0.6, "lora-brand": 0.8}
    assert parsed["Lora hashes"] == "lora-style: 46e3cf0c0fc5, lora-brand: 921015bf54f0"
    assert parse_a1111_parameters(a1111_parameters(typed(spec), LORA_HASHES)) == parsed


def test_a1111s_own_parser_reads_every_field():
    spec = _spec()
    with Image.open(io.BytesIO(_png(spec))) as image:
        parsed = parse_generation_parameters(image.text["parameters"])
    assert parsed["Prompt"].startswith(spec["prompt"] + " <lora:lora-style:0.6>")
    assert parsed["Negative prompt"] == spec["negative_prompt"]
    assert (parsed["Steps"], parsed["Sampler"], parsed["CFG scale"], parsed["Seed"]) == (
        "28",
        "DPM++ 2M",
        "5.5",
        "3272684508",
    )
    assert parsed["Schedule type"] == "Karras"
    assert (parsed["Size-1"], parsed["Size-2"]) == ("112", "64")
    assert parsed["Model hash"] == "93204beabe" and parsed["Model"] == "sd15"
    assert parsed["Lora hashes"] == "lora-style: 46e3cf0c0fc5, lora-brand: 921015bf54f0"
    assert parsed["Version"] == f"campaign-renderer {__version__}"


# Each diffusers scheduler class as A1111 names its sampler: the k-diffusion ones by
# diffusers' scheduler docs (api/schedulers/overview, its "A1111/k-diffusion" column, where
# Karras sigmas are use_karras_sigmas=True), DDIM and UniPC by name (A1111's timestep
# samplers), Flux's flow-matching Euler as Forge names it.
A1111_SAMPLER_OF_CLASS = {
    "EulerDiscreteScheduler": "Euler",
    "EulerAncestralDiscreteScheduler": "Euler a",
    "DPMSolverMultistepScheduler": "DPM++ 2M",
    "DDIMScheduler": "DDIM",
    "UniPCMultistepScheduler": "UniPC",
    "FlowMatchEulerDiscreteScheduler": "Euler",
}
FAMILY_CHECKPOINTS = {
    "sd15": ("v1-5-pruned-emaonly.safetensors", (512, 768)),
    "sdxl": ("sd_xl_base_1.0.safetensors", (832, 1216)),
    "flux": ("flux1-dev.safetensors", (1024, 1024)),
}


def _family_spec(scheduler: str, family: str) -> dict:
    checkpoint, (width, height) = FAMILY_CHECKPOINTS[family]
    spec = _spec(width=width, height=height)
    spec["recipe"].update(
        family=family,
        scheduler=scheduler,
        checkpoint={"name": checkpoint, "sha256": CHECKPOINT_SHA},
        size=[width, height],
    )
    return spec


def _expected(scheduler: str) -> tuple[str, str | None]:
    """The A1111 sampler a scheduler is, and the schedule A1111 must sample it with (None
    for a timestep sampler, which takes none): from its diffusers class and options."""
    ours = SCHEDULERS[scheduler]
    sampler = A1111_SAMPLER_OF_CLASS[ours.diffusers_class]
    karras = ours.options.get("use_karras_sigmas", False)
    return sampler, None if sampler in TIMESTEP_SAMPLERS else "karras" if karras else "uniform"


@pytest.mark.parametrize(
    ("scheduler", "family"),
    [(name, family) for name, ours in SCHEDULERS.items() for family in ours.families],
)
def test_each_scheduler_reads_right_in_a1111_1_9_and_in_sd_parsers(scheduler, family):
    """A1111 1.9+ (its sampler and schedule tables, 1.10) takes the sampler and the schedule
    we sampled with from the text, a strict reader finds a 1.9+ sampler name and schedule
    type as written, and sd-parsers names the same sampler and scheduler."""
    spec = _family_spec(scheduler, family)
    sampler, schedule = _expected(scheduler)
    png = _png(spec)
    with Image.open(io.BytesIO(png)) as image:
        parsed = parse_generation_parameters(image.text["parameters"])
    assert parsed["Sampler"] == sampler and parsed["Sampler"] in SAMPLER_DEFAULT_SCHEDULE
    assert parsed["Schedule type"] in SCHEDULER_LABELS
    pasted, label = get_sampler_and_scheduler(parsed["Sampler"], parsed["Schedule type"])
    assert pasted == sampler and schedule_used(pasted, label) == schedule
    assert (parsed["Size-1"], parsed["Size-2"]) == (str(spec["width"]), str(spec["height"]))

    read = ParserManager().parse(io.BytesIO(png))
    assert read is not None
    (found,) = read.samplers
    assert found.name == sampler
    assert found.parameters == {
        "scheduler": parsed["Schedule type"],
        "cfg_scale": "5.5",
        "seed": str(spec["seed"]),
        "steps": "28",
    }
    assert found.model is not None
    assert (found.model.name, found.model.hash) == (
        FAMILY_CHECKPOINTS[family][0].removesuffix(".safetensors"),
        CHECKPOINT_SHA[:10],
    )


SD_SCHEDULERS = [name for name, ours in SCHEDULERS.items() if "sd15" in ours.families]


@pytest.mark.parametrize("hires", SD_SCHEDULERS)
@pytest.mark.parametrize("base", SD_SCHEDULERS)
def test_the_hires_sampler_and_schedule_read_right_in_a1111(base, hires):
    """A hires pass with its own scheduler: A1111's paste (each "Use same …" taken from the
    first pass as pasted) samples it with the sampler and schedule we did."""
    spec = _spec()
    spec["recipe"].update(
        scheduler=base, refine={"hires": {"factor": 2, "denoise": 0.5, "scheduler": hires}}
    )
    parsed = parse_generation_parameters(a1111_parameters(typed(spec), LORA_HASHES))
    first = get_sampler_and_scheduler(parsed["Sampler"], parsed["Schedule type"])
    hr_sampler, hr_schedule = get_hr_sampler_and_scheduler(parsed)
    sampler = first[0] if hr_sampler == "Use same sampler" else hr_sampler
    label = first[1] if hr_schedule == "Use same scheduler" else hr_schedule
    assert (sampler, schedule_used(sampler, label)) == _expected(hires)


def _quoting_spec() -> dict:
    """An SDXL variant whose prompts and names hold commas, colons and quotes, with every
    refine step (two detailers with their own prompts)."""
    spec = _family_spec("dpmpp_2m_karras", "sdxl")
    spec.update(
        prompt='product photo of the Kestrel "Trail Runner" shoe, orange: studio light, 85mm',
        negative_prompt='blurry, "low quality", text: watermark',
        refine_prompts={
            "refine.detail.0.prompt": '"a detailed face", smiling, eyes: sharp',
            "refine.detail.0.negative_prompt": '"hero" pose',
            "refine.detail.1.prompt": "the Kestrel logo, crisp",
        },
    )
    spec["recipe"]["checkpoint"]["name"] = "kestrel, sdxl v2.safetensors"
    spec["recipe"]["refine"] = {
        "refiner": {
            "checkpoint": {"name": "sd_xl_refiner_1.0.safetensors", "sha256": "77" * 32},
            "switch_at": 0.8,
        },
        "hires": {
            "factor": 1.5,
            "denoise": 0.35,
            "steps": 12,
            "scheduler": "euler_a",
            "upscaler": "model",
            "model": {"name": "4x-UltraSharp, v2.safetensors", "sha256": "55" * 32},
        },
        "detail": [
            {"detect": "faces", "prompt": "{{ face }}", "negative_prompt": "{{ n }}", "steps": 20},
            {"detect": "product", "prompt": "{{ logo }}", "strength": 0.3},
        ],
        "upscale": {"model": {"name": "RealESRGAN_x4plus.safetensors", "sha256": "66" * 32}},
    }
    return spec


def _a1111_fields(spec: dict) -> dict:
    """The fields A1111 holds for ``_quoting_spec`` before writing: its own, then the extra
    ones in the order they are set (ADetailer's, the hires pass's, the Lora extension's, the
    refiner's)."""
    ours = spec["refine_prompts"]
    return {
        "Steps": 28,
        "Sampler": "DPM++ 2M",
        "Schedule type": "Karras",
        "CFG scale": 5.5,
        "Seed": spec["seed"],
        "Size": "832x1216",
        "Model hash": CHECKPOINT_SHA[:10],
        "Model": "kestrel, sdxl v2",
        "Denoising strength": 0.35,
        "ADetailer model": "faces",
        "ADetailer prompt": ours["refine.detail.0.prompt"],
        "ADetailer negative prompt": ours["refine.detail.0.negative_prompt"],
        "ADetailer mask blur": 4,
        "ADetailer denoising strength": 0.4,
        "ADetailer inpaint only masked": True,
        "ADetailer inpaint padding": 32,
        "ADetailer use separate steps": True,
        "ADetailer steps": 20,
        "ADetailer model 2nd": "product",
        "ADetailer prompt 2nd": ours["refine.detail.1.prompt"],
        "ADetailer mask blur 2nd": 4,
        "ADetailer denoising strength 2nd": 0.3,
        "ADetailer inpaint only masked 2nd": True,
        "ADetailer inpaint padding 2nd": 32,
        "Hires sampler": "Euler a",
        "Hires schedule type": "Automatic",
        "Hires upscale": 1.5,
        "Hires steps": 12,
        "Hires upscaler": "4x-UltraSharp, v2",
        "Lora hashes": "lora-style: 46e3cf0c0fc5, lora-brand: 921015bf54f0",
        "Refiner": "sd_xl_refiner_1.0 [7777777777]",
        "Refiner switch at": 0.8,
        "Postprocess upscaler": "RealESRGAN_x4plus",
        "Version": f"campaign-renderer {__version__}",
    }


def test_every_value_is_quoted_byte_for_byte_as_a1111_quotes_it():
    """Our text is what A1111 1.10's create_infotext makes of the same fields (each value
    through its quote()), and A1111's parser gives every value back whole."""
    spec = _quoting_spec()
    text = a1111_parameters(typed(spec), LORA_HASHES)
    fields = _a1111_fields(spec)
    prompt = spec["prompt"] + " <lora:lora-style:0.6> <lora:lora-brand:0.8>"
    assert text == create_infotext(prompt, spec["negative_prompt"], fields)

    parsed = parse_generation_parameters(text)
    assert (parsed["Prompt"], parsed["Negative prompt"]) == (prompt, spec["negative_prompt"])
    for key, value in fields.items():
        if key != "Size":
            assert parsed[key] == str(value), key
    assert parse_a1111_parameters(text) == {
        "prompt": spec["prompt"],
        "negative_prompt": spec["negative_prompt"],
        "loras": {"lora-style": 0.6, "lora-brand": 0.8},
        **{key: str(value) for key, value in fields.items()},
    }


def test_sd_parsers_splits_quoted_values_as_it_splits_a1111s_own_text():
    """sd-parsers reads the prompts whole (commas, quotes and colons in them) and the sampler
    settings right. It splits the settings line at every comma and keeps a piece only when it
    holds exactly one colon, so a value A1111 quotes for its commas or colons comes apart:
    in A1111 1.10's own text for these fields as in ours (the same bytes)."""
    spec = _quoting_spec()
    prompt = f"{spec['prompt']} <lora:lora-style:0.6> <lora:lora-brand:0.8>"
    a1111_text = create_infotext(prompt, spec["negative_prompt"], _a1111_fields(spec))
    from_a1111 = AUTOMATIC1111Parser().parse({"parameters": a1111_text})
    (found,) = from_a1111.samplers
    assert [prompt.value for prompt in found.prompts] == [prompt]
    assert [prompt.value for prompt in found.negative_prompts] == [spec["negative_prompt"]]
    assert (found.name, found.parameters["scheduler"]) == ("DPM++ 2M", "Karras")
    assert found.model is not None and found.model.hash == CHECKPOINT_SHA[:10]
    assert found.model.name == '"kestrel'  # Model: "kestrel, sdxl v2"
    assert from_a1111.metadata["ADetailer prompt"] == '"\\"a detailed face\\"'
    assert from_a1111.metadata["lora-brand"] == '921015bf54f0"'
    assert "Lora hashes" not in from_a1111.metadata
    assert from_a1111.metadata["Hires upscaler"] == '"4x-UltraSharp'
    assert from_a1111.metadata["ADetailer negative prompt"] == '"hero" pose'  # unquoted: whole

    read = ParserManager().parse(io.BytesIO(_png(spec)))
    assert read is not None
    assert (read.samplers, read.metadata) == (from_a1111.samplers, from_a1111.metadata)
    assert read.raw_parameters["parameters"] == a1111_text


def test_variant_json_hashes_to_its_id_and_source_type_is_declared():
    spec = _spec()
    metadata = read_png_metadata(_png(spec))
    assert metadata["variant"] == spec
    assert sha256_json(metadata["variant"]) == sha256_json(spec)
    assert metadata["digital_source_type"] == TRAINED_ALGORITHMIC_MEDIA
    photo = _spec()
    photo["recipe"]["img2img"] = {"image": "shoe.jpg", "strength": 0.5, "source_is_photo": True}
    assert (
        read_png_metadata(_png(photo))["digital_source_type"]
        == COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA
    )


def test_same_spec_same_bytes_and_nothing_time_dependent():
    first, second = _png(_spec()), _png(_spec())
    assert first == second
    assert b"tIME" not in first
    with Image.open(io.BytesIO(first)) as image:
        assert set(image.text) == {"parameters", "campaign_variant", "XML:com.adobe.xmp"}
        assert all("/tmp" not in value and "/home" not in value for value in image.text.values())


def test_exiftool_reads_the_iptc_source_type_and_the_parameters(tmp_path):
    spec = _spec()
    path = tmp_path / "image.png"
    path.write_bytes(_png(spec))
    done = subprocess.run(
        ["exiftool", "-json", "-G1", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    (tags,) = json.loads(done.stdout)
    assert tags["XMP-iptcExt:DigitalSourceType"] == TRAINED_ALGORITHMIC_MEDIA
    assert tags["XMP-dc:Description"] == spec["prompt"]
    assert tags["PNG:Parameters"] == a1111_parameters(typed(spec), LORA_HASHES)
    assert json.loads(tags["PNG:Campaign_variant"]) == spec
