"""A1111/Forge infotext read by A1111's own rules into a Generation: every field of a 1.9+
text and of a pre-1.9 one, both sampler conventions, LoRA tags with their hashes, quoting,
what we cannot express listed as problems, and our own writer's text read back exactly."""

from __future__ import annotations

from pathlib import Path

import pytest

from renderer.core.errors import InputError
from renderer.core.families import SCHEDULERS
from renderer.core.hashing import short_hash
from renderer.load.imported import Checkpoint, Generation, Hires, Lora
from renderer.load.infotext import parse_infotext
from renderer.plan.variant_spec import VariantSpec
from renderer.produce.metadata import a1111_parameters

DATA = Path(__file__).parent / "data" / "import"
SETTINGS = "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512, Model: sd15"


def test_a_1_10_text_gives_every_field():
    generation = parse_infotext((DATA / "a1111_v1_10.txt").read_text())
    assert generation == Generation(
        source="",
        prompt="product photo of a trail runner, orange, studio lighting\nsoft shadow",
        negative_prompt="blurry, (low quality:1.4)\nwatermark",
        steps=28,
        cfg=6.5,
        seed=3272684508,
        width=512,
        height=768,
        scheduler="dpmpp_2m_karras",
        checkpoint=Checkpoint(name="v1-5-pruned-emaonly", hash="6ce0161689"),
        loras=(
            Lora(name="brand style v2", weight=0.8, hash="a1b2c3d4e5f6"),
            Lora(name="add_detail", weight=0.5, hash="7c6bad76eb54"),
        ),
        hires=Hires(
            factor=2.0, size=None, steps=14, denoise=0.45, upscaler="R-ESRGAN 4x+", scheduler=None
        ),
        clip_skip=2,
        ignored=("Version",),
    )
    assert generation.source == "A1111 infotext, Version v1.10.1"


def test_a_pre_1_9_text_carries_the_schedule_in_the_sampler_name():
    generation = parse_infotext((DATA / "a1111_v1_6.txt").read_text())
    assert generation.scheduler == "dpmpp_2m_karras"
    assert (generation.width, generation.height, generation.seed) == (768, 512, 42)
    assert generation.hires == Hires(
        factor=None, size=(1536, 1024), steps=None, denoise=0.5, upscaler="Latent",
        scheduler="euler_a",
    )  # fmt: skip
    assert generation.problems == () and generation.loras == ()


@pytest.mark.parametrize(
    ("sampler", "schedule", "ours"),
    [
        ("DPM++ 2M Karras", None, "dpmpp_2m_karras"),  # before 1.9
        ("DPM++ 2M", "Karras", "dpmpp_2m_karras"),  # 1.9+
        ("DPM++ 2M", "Automatic", "dpmpp_2m_karras"),  # 1.9+: DPM++ 2M's own default
        ("DPM++ 2M", None, "dpmpp_2m"),  # before 1.9: the model's sigmas
        ("DPM++ 2M", "Uniform", "dpmpp_2m"),  # 1.9+: the model's sigmas
        ("Euler a", None, "euler_a"),
        ("Euler a", "Automatic", "euler_a"),
        ("Euler", "Automatic", "euler"),
        ("DDIM", "Karras", "ddim"),  # a timesteps sampler: the schedule type is unused
        ("UniPC", "Automatic", "unipc"),
    ],
)
def test_both_sampler_conventions_give_our_scheduler(sampler, schedule, ours):
    schedule_field = f", Schedule type: {schedule}" if schedule else ""
    text = f"a cat\nSteps: 20, Sampler: {sampler}{schedule_field}, CFG scale: 7, Seed: 1"
    generation = parse_infotext(text)
    assert generation.scheduler == ours
    assert not [problem for problem in generation.problems if "Sampler" in problem]


@pytest.mark.parametrize(
    ("sampler", "schedule"),
    [("DPM++ SDE", None), ("DPM++ 2M", "Exponential"), ("Euler", "Karras"), ("Heun", "Automatic")],
)
def test_a_sampler_we_cannot_render_is_a_problem_not_a_substitute(sampler, schedule):
    schedule_field = f", Schedule type: {schedule}" if schedule else ""
    generation = parse_infotext(f"a cat\n{SETTINGS.replace('Euler a', sampler)}{schedule_field}")
    assert generation.scheduler is None
    (problem,) = generation.problems
    assert repr(sampler) in problem and (schedule is None or repr(schedule) in problem)
    assert "we support Euler, Euler a, DPM++ 2M, DPM++ 2M Karras, DDIM, UniPC" in problem


def test_hires_sampler_and_schedule_type_of_1_9():
    text = (
        f"a cat\n{SETTINGS}, Denoising strength: 0.3, Hires upscale: 1.5, Hires upscaler: Latent, "
        "Hires sampler: DPM++ 2M, Hires schedule type: Karras"
    )
    hires = parse_infotext(text).hires
    assert hires is not None and hires.scheduler == "dpmpp_2m_karras" and hires.factor == 1.5


def _spec(scheduler: str, hires: str = "euler_a", brand: str = "lora-brand") -> VariantSpec:
    checkpoint_sha, style_sha = "93" * 32, "46" * 32
    return VariantSpec.from_json(
        {
            "schema": 1,
            "campaign": "spring",
            "recipe": {
                "name": "look",
                "version": 3,
                "family": "sd15",
                "checkpoint": {"name": "sd15-brand.safetensors", "sha256": checkpoint_sha},
                "loras": [
                    {"name": "lora-style.safetensors", "sha256": style_sha, "weight": 0.6},
                    {"name": f"{brand}.safetensors", "sha256": "92" * 32, "weight": -0.25},
                ],
                "scheduler": scheduler,
                "steps": 28,
                "cfg": 5.5,
                "size": [64, 64],
                "seed": 7,
                "prompt": "{{ product }}",
                "negative_prompt": "blurry",
                "refine": {
                    "hires": {"factor": 1.5, "denoise": 0.4, "steps": 12, "scheduler": hires}
                },
            },
            "axes": {"product": "trail runner, orange"},
            "seed": 3272684508,
            "prompt": "a trail runner, orange: on a studio background",
            "negative_prompt": "blurry, low quality",
            "width": 112,
            "height": 64,
            "postprocess": {"logo": None},
        }
    )


SD_SCHEDULERS = [name for name, scheduler in SCHEDULERS.items() if "sd15" in scheduler.families]


@pytest.mark.parametrize("hires", SD_SCHEDULERS)
@pytest.mark.parametrize("scheduler", SD_SCHEDULERS)
def test_our_own_metadata_reads_back_exactly(scheduler, hires):
    """Every scheduler, and every one for the hires pass: A1111 1.9+'s fields, a hires pass
    with the first pass's scheduler written as A1111 does (not at all: "the same")."""
    spec = _spec(scheduler, hires)
    lora_hashes = ("ab" * 32, "cd" * 32)
    generation = parse_infotext(a1111_parameters(spec, lora_hashes))
    recipe = spec.recipe
    assert (generation.prompt, generation.negative_prompt) == (spec.prompt, spec.negative_prompt)
    assert (generation.steps, generation.cfg, generation.seed) == (28, 5.5, spec.seed)
    assert (generation.width, generation.height) == (spec.width, spec.height)
    assert generation.scheduler == scheduler
    assert generation.checkpoint == Checkpoint("sd15-brand", short_hash(recipe.checkpoint.sha256))
    assert generation.loras == (
        Lora("lora-style", 0.6, lora_hashes[0][:12]),
        Lora("lora-brand", -0.25, lora_hashes[1][:12]),
    )
    assert generation.hires == Hires(
        factor=1.5,
        size=None,
        steps=12,
        denoise=0.4,
        upscaler="Latent",
        scheduler=None if hires == scheduler else hires,
    )
    assert generation.problems == () and generation.ignored == ("Version",)


def test_a_lora_named_with_a_comma_keeps_its_hash():
    """A1111's Lora hashes drop a name's commas and colons (they would end its entry); the
    tag keeps them, and the reader finds the hash by the name as the entry spells it."""
    text = a1111_parameters(_spec("euler_a", brand="kestrel, brand v2"), ("ab" * 32, "cd" * 32))
    assert 'Lora hashes: "lora-style: abababababab, kestrel brand v2: cdcdcdcdcdcd"' in text
    generation = parse_infotext(text)
    assert generation.loras[1] == Lora("kestrel, brand v2", -0.25, "cd" * 6)
    assert generation.problems == ()


def test_quoted_values_keep_their_commas_and_escaped_quotes():
    text = (
        f"a cat\n{SETTINGS}, Denoising strength: 0.5, Hires upscale: 2, "
        'Hires upscaler: "4x_brand \\"crisp\\", v2: final", Version: v1.10.1'
    )
    hires = parse_infotext(text).hires
    assert hires is not None and hires.upscaler == '4x_brand "crisp", v2: final'


def test_lora_tags_weights_and_spellings():
    generation = parse_infotext(
        "<lora:first:0.7> a cat, <lora:plain> on a mat <lyco:third:0.25>,"
        f" <lora:split:0.5:0.9>\n{SETTINGS}"
    )
    assert generation.prompt == "a cat, on a mat,"
    assert [(lora.name, lora.weight, lora.hash) for lora in generation.loras] == [
        ("first", 0.7, None),
        ("plain", 1.0, None),  # A1111: no weight is 1
        ("third", 0.25, None),
        ("split", 0.9, None),  # the UNet's weight; the differing text encoder's is a problem
    ]
    (problem,) = generation.problems
    assert "'<lora:split:0.5:0.9>'" in problem and "text encoder 0.5" in problem


def test_hashes_without_tags_and_tags_in_the_negative_prompt_are_problems():
    generation = parse_infotext(
        f'a cat\nNegative prompt: dog <lora:ugly:1>\n{SETTINGS}, Lora hashes: "ugly: 0123456789ab"'
    )
    assert generation.loras == () and generation.negative_prompt == "dog <lora:ugly:1>"
    assert generation.problems == (
        "Lora hashes names 'ugly', which no <lora:…> tag in the prompt uses",
        "the negative prompt holds the extra-network tag '<lora:ugly:1>', which we would pass "
        "to the text encoder as words; remove it",
    )


def test_other_extra_networks_stay_in_the_prompt_as_problems():
    generation = parse_infotext(f"a cat <hypernet:anime:0.6>\n{SETTINGS}")
    assert generation.prompt == "a cat <hypernet:anime:0.6>"
    assert generation.loras == ()
    assert generation.problems == (
        "prompt tag '<hypernet:anime:0.6>': hypernet networks are not something we load; we "
        "load LoRAs (<lora:NAME:WEIGHT>)",
    )


def test_settings_we_cannot_reproduce_are_problems_and_version_is_ignored():
    generation = parse_infotext(
        f"a cat, embedding_x\n{SETTINGS}, VAE: vae-ft-mse, ENSD: 31337, "
        'TI hashes: "embedding_x: c74b4e810b03", Batch size: 4, Batch pos: 2, Version: f2.0.1'
    )
    assert generation.problems == (
        "VAE 'vae-ft-mse': a setting we cannot reproduce",
        "ENSD '31337': a setting we cannot reproduce",
        "TI hashes 'embedding_x: c74b4e810b03': a setting we cannot reproduce",
    )
    assert generation.ignored == ("Batch size", "Batch pos", "Version")
    assert generation.batch_size == 1


def test_denoising_strength_without_hires_is_an_img2img_problem():
    generation = parse_infotext(f"a cat\n{SETTINGS}, Denoising strength: 0.75")
    assert generation.hires is None
    (problem,) = generation.problems
    assert problem.startswith("Denoising strength 0.75 without Hires upscale or Hires resize")


def test_a_bad_or_missing_value_is_named():
    generation = parse_infotext("a cat\nSteps: many, Sampler: Euler, CFG scale: 7, Size: 8x")
    assert (generation.steps, generation.seed, generation.width) == (None, None, None)
    assert generation.problems == (
        "the text gives no Seed, which A1111 always writes",
        "Size '8x' is not WIDTHxHEIGHT",
        "Steps 'many' is not a whole number",
        "the text names no checkpoint (no Model or Model hash)",
    )


def test_a_text_without_a_settings_line_is_refused():
    with pytest.raises(InputError, match="its last line holds no settings") as refused:
        parse_infotext("a cat\nNegative prompt: dog\nSteps: 20, Seed: 1")
    assert "Steps: 20, Seed: 1" in str(refused.value)
