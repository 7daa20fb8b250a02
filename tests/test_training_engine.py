"""The LoRA training engine (renderer/train/engine.py) on the tiny demo models, every family.

Every margin is measured in the test from the spread over evaluation seeds, never assumed.
Torch runs on one thread here: the engine's bytes are compared across processes, which must
agree on the thread count, and one thread is also the fastest on two shared cores.

The demo VAEs are random, so they encode every image to nearly the same small latent and
their decoders' GroupNorm maps any latent to alike noise patterns: what a denoiser LoRA can
learn, and what renders are judged on here, is the latent the pipeline renders (before the
decoder) against the latent of the training image.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from renderer.core.errors import HashMismatchError, InputError
from renderer.core.hashing import sha256_file
from renderer.train.data import load_pixels
from renderer.train.engine import (
    LoraSettings,
    SampleSettings,
    TrainingItem,
    TrainingJob,
    TrainSettings,
    evaluation_loss,
    train,
)
from renderer.train.job import DEFAULT_TARGETS
from renderer.train.report import report_data
from renderer.validate.training_buckets import geometry, image_size
from renderer.weights.compat import lora_family_problem, read_header
from renderer.weights.flux_lora_layout import diffusers_lora_weights

# Minutes of renders: scheduled before the other files (tests/conftest.py).
pytestmark = pytest.mark.long

REPO = Path(__file__).resolve().parent.parent
KESTREL = REPO / "campaigns" / "brands" / "kestrel"
FAMILIES = ("sd15", "sdxl", "flux")
EVAL_SEEDS = (101, 102, 103, 104)
RENDER_SEEDS = (201, 202, 203)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def dataset() -> tuple[TrainingItem, ...]:
    """The three 64 px Kestrel references, and the dusk scenes draw.py makes beside them in
    other shapes: a landscape that buckets down (96x64 -> 64x48), a portrait and a small
    square that keep their size (buckets never upscale)."""
    paths = sorted(KESTREL.glob("reference-*.png"))
    paths += [
        KESTREL / "training" / f"dusk-{name}.png" for name in ("landscape", "portrait", "small")
    ]
    return tuple(
        TrainingItem(path, sha256_file(path), f"kestrel brand picture number {index}")
        for index, path in enumerate(paths)
    )


def checkpoint_of(family: str, models: Path) -> tuple[Path, Path | None]:
    # SD1.5 as the A1111 single file (the demo recipe's), SDXL and Flux as folders.
    return (
        (models / "sd15.safetensors", models / "sd15")
        if family == "sd15"
        else (models / family, None)
    )


def make_job(family: str, models: Path, items: tuple[TrainingItem, ...], **train) -> TrainingJob:
    checkpoint, config = checkpoint_of(family, models)
    # The SD UNets also adapt their ResNet convolutions: kohya names those too.
    targets = DEFAULT_TARGETS[family] + (("conv1", "conv2") if family != "flux" else ())
    settings = {
        "steps": 60,
        "learning_rate": 1e-2,
        "schedule": "cosine",
        "warmup_steps": 3,
        "batch_size": 2,
        "resolution": 64,
        "seed": 7,
        "save_every": 30,
    } | train
    return TrainingJob(
        family=family,
        checkpoint=checkpoint,
        checkpoint_config=config,
        items=items,
        spec_hash="5" * 64,
        training_id=f"test-{family}",
        lora=LoraSettings(rank=8, alpha=8.0, target_modules=targets),
        train=TrainSettings(**settings),
        samples=SampleSettings(prompts=(items[0].caption,), seeds=(1, 2), steps=4),
        name=f"kestrel-{family}",
        comment="test_training_engine",
    )


def load_pipeline(family: str, models: Path):
    import diffusers

    checkpoint, config = checkpoint_of(family, models)
    pipeline_class = getattr(
        diffusers,
        {
            "sd15": "StableDiffusionPipeline",
            "sdxl": "StableDiffusionXLPipeline",
            "flux": "FluxPipeline",
        }[family],
    )
    pipe = (
        pipeline_class.from_pretrained(checkpoint, local_files_only=True)
        if config is None
        else pipeline_class.from_single_file(
            str(checkpoint), config=str(config), local_files_only=True
        )
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def load_trained_lora(pipe, family: str, lora: Path) -> int:
    """Load a trained LoRA file with diffusers' ``load_lora_weights`` (a kohya Flux file split
    by the transformer's own widths: diffusers' converter assumes Flux.1's, and the demo Flux is
    narrower); returns how many denoiser layers diffusers made from it."""
    denoiser = pipe.transformer if family == "flux" else pipe.unet
    weights = diffusers_lora_weights(family, lora, denoiser)
    pipe.load_lora_weights(weights, adapter_name="trained")
    if isinstance(weights, dict):
        return len(weights) // 2
    return len({n.split(".")[0] for n in read_header(lora).shapes if n.startswith("lora_unet_")})


def lora_modules(model: torch.nn.Module) -> int:
    from peft.tuners.lora import LoraLayer

    return sum(isinstance(module, LoraLayer) for module in model.modules())


@pytest.fixture(scope="module")
def trained(demo_models, dataset, tmp_path_factory):
    """family -> (job, result, cache): the main job, trained once per family on first use."""
    runs = {}

    def get(family: str):
        if family not in runs:
            job = make_job(family, demo_models, dataset)
            root = tmp_path_factory.mktemp(f"main-{family}")
            runs[family] = (job, train(job, root / "out", root / "cache"), root / "cache")
        return runs[family]

    return get


@pytest.mark.parametrize("family", FAMILIES)
def test_training_lowers_the_loss_on_its_images(family, trained):
    job, result, cache = trained(family)
    base = evaluation_loss(job, cache, EVAL_SEEDS)
    tuned = evaluation_loss(job, cache, EVAL_SEEDS, result.lora)
    drops = [b - t for b, t in zip(base, tuned, strict=True)]
    # How much the figure moves with the evaluation seed alone, for either model.
    spread = max(statistics.stdev(base), statistics.stdev(tuned))
    summary = (
        f"{family}: loss base {statistics.mean(base):.4f} -> trained "
        f"{statistics.mean(tuned):.4f}; drop {min(drops):.4f}..{max(drops):.4f}, "
        f"seed spread {spread:.4f}"
    )
    print(summary)
    assert min(drops) > 2 * spread, summary
    assert len(result.step_losses) == job.train.steps
    assert [c.step for c in result.checkpoints] == [30, 60]


def small_job(family: str, models: Path, items) -> TrainingJob:
    """Few steps, a checkpoint every 5 and gradient accumulation: the resume scenarios."""
    return make_job(
        family, models, items, steps=12, save_every=5, gradient_accumulation=2, learning_rate=5e-3
    )


@pytest.fixture(scope="module")
def reference(demo_models, dataset, tmp_path_factory):
    """family -> (job, uninterrupted result, log lines, cache) of the small job."""
    runs = {}

    def get(family: str):
        if family not in runs:
            job = small_job(family, demo_models, dataset)
            root = tmp_path_factory.mktemp(f"reference-{family}")
            log: list[str] = []
            result = train(job, root / "out", root / "cache", log=log.append)
            runs[family] = (job, result, log, root / "cache")
        return runs[family]

    return get


@pytest.mark.parametrize("family", FAMILIES)
def test_the_same_job_twice_gives_the_same_bytes(family, reference, tmp_path):
    job, first, first_log, cache = reference(family)
    log: list[str] = []
    second = train(job, tmp_path / "out", cache, log=log.append)
    assert second.sha256 == first.sha256
    assert second.lora.read_bytes() == first.lora.read_bytes()
    assert second.step_losses == first.step_losses
    samples = [p.read_bytes() for c in second.checkpoints for p in c.samples]
    assert samples == [p.read_bytes() for c in first.checkpoints for p in c.samples]
    # The first run computed the latents and embeddings; the second reads them all back.
    assert "features: 0 embedding(s) and 0 latent(s) computed" not in first_log[0]
    assert log[0].startswith("features: 0 embedding(s) and 0 latent(s) computed")


def _train_in_child(job: dict, out: Path, cache: Path, updates) -> None:
    torch.set_num_threads(1)
    train(TrainingJob.from_dict(job), out, cache, progress=lambda p: updates.send(p.step))
    updates.send("done")


def _kill_at(job: TrainingJob, out: Path, cache: Path, step: int, delay: float) -> None:
    """Run the job in a child process and SIGKILL it ``delay`` s after it reports ``step``.

    The child is forked (the parent has imported torch and diffusers already; a fresh
    interpreter would spend 10-20 s importing them per kill here); what it held in memory
    dies with it, and the resume runs in this process."""
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_train_in_child, args=(job.to_dict(), out, cache, sender))
    child.start()
    try:
        while True:
            assert receiver.poll(300), "the child reported nothing for 300 s"
            update = receiver.recv()
            assert update != "done", f"the child finished before step {step}"
            if update == step:
                time.sleep(delay)
                os.kill(child.pid, signal.SIGKILL)
                break
    finally:
        child.join(60)
    assert child.exitcode == -signal.SIGKILL


@pytest.mark.parametrize("family", FAMILIES)
def test_sigkill_then_resume_gives_the_bytes_of_an_uninterrupted_run(family, reference, tmp_path):
    job, uninterrupted, _, cache = reference(family)
    out, every = tmp_path / "out", job.train.save_every
    states = lambda: sorted((out / "checkpoints").glob("state-*.pt"))  # noqa: E731
    chance = random.Random(f"kill-{family}")
    # Once before any checkpoint exists (at once, steps before the child could reach one) ...
    _kill_at(job, out, cache, chance.randint(1, every - 3), 0.0)
    assert states() == []
    # ... then, in the same folder, at a random step after one exists.
    kill_step = chance.randint(every + 1, job.train.steps - 1)
    _kill_at(job, out, cache, kill_step, chance.uniform(0, 0.05))
    assert states(), "no checkpoint was left to resume from"
    resumed = train(job, out, cache)
    assert 0 < resumed.resumed_from <= kill_step and resumed.resumed_from % every == 0
    assert resumed.sha256 == uninterrupted.sha256
    assert resumed.step_losses == uninterrupted.step_losses
    assert list(out.rglob(".tmp-*")) == []


@pytest.mark.parametrize("family", FAMILIES)
def test_trained_lora_loads_in_diffusers_and_changes_pixels(family, trained, demo_models):
    job, result, _ = trained(family)
    checkpoint, _ = checkpoint_of(family, demo_models)
    assert lora_family_problem(result.lora, family, checkpoint) is None
    other = "sd15" if family == "flux" else "flux"
    assert lora_family_problem(result.lora, other, checkpoint_of(other, demo_models)[0])
    header = read_header(result.lora)
    for key in (
        "ss_base_model_version",
        "ss_network_module",
        "ss_network_dim",
        "ss_network_alpha",
        "ss_steps",
        "ss_max_train_steps",
        "ss_resolution",
        "ss_num_train_images",
        "ss_seed",
        "ss_learning_rate",
        "ss_training_comment",
        "sshs_model_hash",
        "campaign_dataset_sha256",
    ):
        assert header.metadata.get(key), key
    assert header.metadata["campaign_spec_sha256"] == job.spec_hash
    assert header.metadata["campaign_training_id"] == job.training_id
    assert header.metadata["ss_num_train_images"] == str(len(job.items))
    modules = {name.split(".lora_down.")[0] for name in header.shapes if ".lora_down." in name}
    assert modules and all(name.startswith("lora_unet_") for name in modules)

    pipe = load_pipeline(family, demo_models)
    arguments = {
        "prompt": job.items[0].caption,
        "num_inference_steps": 4,
        "width": 64,
        "height": 64,
        "output_type": "np",
    }

    def render():
        return pipe(**arguments, generator=torch.Generator().manual_seed(3)).images[0]

    plain = render()
    adapted = load_trained_lora(pipe, family, result.lora)
    denoiser = pipe.transformer if family == "flux" else pipe.unet
    assert lora_modules(denoiser) == adapted  # every module in the file found its layer
    changed = np.abs(render() - plain)
    assert changed.max() > 0.05, f"{family}: LoRA moved pixels by at most {changed.max():.4f}"


@pytest.mark.parametrize("family", FAMILIES)
def test_renders_move_toward_the_training_images(family, trained, demo_models):
    """Each caption rendered at its image's bucket lands closer to that image's latent with
    the LoRA than without, at the same seeds, by more than the seed-to-seed spread."""
    from diffusers import FluxPipeline

    job, result, _ = trained(family)
    pipe = load_pipeline(family, demo_models)
    config, step = pipe.vae.config, 16  # the tiny models' bucket step (as the engine's)
    shift = getattr(config, "shift_factor", None) or 0.0

    def render_all() -> list[float]:
        distances = []
        for item in job.items:
            shape = geometry(item.image, image_size(item.image), 64, step)
            width, height = shape.bucket
            with torch.no_grad():
                target = (
                    pipe.vae.encode(load_pixels(item.image, shape)[None]).latent_dist.mean - shift
                ) * config.scaling_factor
            for seed in RENDER_SEEDS:
                latents = pipe(
                    prompt=item.caption,
                    num_inference_steps=6,
                    width=width,
                    height=height,
                    output_type="latent",
                    generator=torch.Generator().manual_seed(seed),
                ).images
                if family == "flux":
                    latents = FluxPipeline._unpack_latents(
                        latents, height, width, pipe.vae_scale_factor
                    )
                distances.append(float(((latents - target) ** 2).mean()))
        return distances

    base = render_all()
    load_trained_lora(pipe, family, result.lora)
    tuned = render_all()
    gains = [b - t for b, t in zip(base, tuned, strict=True)]
    spread = statistics.stdev(base)
    summary = (
        f"{family}: latent distance to the training image {statistics.mean(base):.4f}"
        f" -> {statistics.mean(tuned):.4f} with the LoRA; gain {min(gains):.4f}.."
        f"{max(gains):.4f} (mean {statistics.mean(gains):.4f}), seed spread {spread:.4f}"
    )
    print(summary)
    assert min(gains) > 0 and statistics.mean(gains) > spread, summary


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_text_encoder_training_writes_kohya_te_keys_that_load(
    family, demo_models, dataset, tmp_path
):
    job = make_job(family, demo_models, dataset[:2], steps=3, save_every=0, warmup_steps=0)
    job = replace(job, lora=replace(job.lora, train_text_encoder=True), samples=SampleSettings())
    result = train(job, tmp_path / "out", tmp_path / "cache")
    names = read_header(result.lora).shapes
    encoders = {
        "sd15": {"text_encoder": "lora_te_"},
        "sdxl": {"text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_"},
    }[family]
    pipe = load_pipeline(family, demo_models)
    pipe.load_lora_weights(str(result.lora), adapter_name="trained")
    for component, prefix in encoders.items():
        in_file = {n.split(".")[0] for n in names if n.startswith(prefix) and "lora_down" in n}
        assert in_file and lora_modules(getattr(pipe, component)) == len(in_file), component
    assert lora_family_problem(result.lora, family, checkpoint_of(family, demo_models)[0]) is None
    assert result.checkpoints[-1].samples == ()


def test_v_prediction_checkpoints_train_on_the_velocity(demo_models, dataset, tmp_path):
    """The target follows the scheduler config's prediction_type (a v-prediction copy)."""
    import shutil

    folder = shutil.copytree(demo_models / "sd15", tmp_path / "sd15-v")
    config_path = folder / "scheduler" / "scheduler_config.json"
    config_path.write_text(config_path.read_text().replace('"epsilon"', '"v_prediction"'))
    job = make_job("sd15", demo_models, dataset[:2], steps=2, save_every=0, warmup_steps=0)
    epsilon = train(
        replace(job, checkpoint=demo_models / "sd15", checkpoint_config=None),
        tmp_path / "epsilon",
        tmp_path / "cache",
    )
    velocity = train(
        replace(job, checkpoint=folder, checkpoint_config=None), tmp_path / "v", tmp_path / "cache"
    )
    assert read_header(velocity.lora).metadata["modelspec.prediction_type"] == "v"
    assert read_header(velocity.lora).metadata["ss_base_model_version"] == "sd_v1_v"
    assert read_header(epsilon.lora).metadata["modelspec.prediction_type"] == "epsilon"
    assert velocity.step_losses[0] != epsilon.step_losses[0]


@pytest.mark.parametrize(
    ("size", "resolution", "step", "bucket"),
    [
        ((96, 64), 64, 16, (64, 48)),  # larger than 64²: scaled to that area, floored
        ((48, 80), 64, 16, (48, 80)),  # smaller: kept, never upscaled
        ((1000, 1000), 512, 64, (512, 512)),
        ((1920, 1080), 1024, 64, (1344, 768)),
        ((500, 300), 1024, 64, (448, 256)),
    ],
)
def test_buckets_downscale_and_never_upscale(size, resolution, step, bucket):
    shape = geometry(Path("x.png"), size, resolution, step)
    assert shape.bucket == bucket
    width, height = shape.bucket
    assert width <= size[0] and height <= size[1] and width * height <= resolution**2
    assert shape.resized[0] >= width and shape.resized[1] >= height


def test_bad_input_names_the_file_or_key(demo_models, dataset, tmp_path):
    job = make_job("sd15", demo_models, dataset[:2], steps=2, save_every=0, warmup_steps=0)
    tampered = replace(job, items=(replace(job.items[0], sha256="0" * 64), job.items[1]))
    with pytest.raises(HashMismatchError) as err:
        train(tampered, tmp_path / "a", tmp_path / "cache")
    assert str(job.items[0].image) in str(err.value)
    with pytest.raises(InputError, match=r"train\.warmup_steps"):
        train(
            replace(job, train=replace(job.train, warmup_steps=5)),
            tmp_path / "a",
            tmp_path / "cache",
        )
    with pytest.raises(InputError, match=r"lora\.target_modules"):
        train(
            replace(job, lora=replace(job.lora, target_modules=("no_such_layer",))),
            tmp_path / "a",
            tmp_path / "cache",
        )
    train(job, tmp_path / "b", tmp_path / "cache")
    with pytest.raises(InputError, match="another training job"):
        train(replace(job, train=replace(job.train, seed=8)), tmp_path / "b", tmp_path / "cache")


def test_report_data(trained, tmp_path):
    job, result, _ = trained("sd15")
    data = report_data(job, result, tmp_path / "report")
    assert Image.open(data.loss_curve).size == (640, 320)
    assert [step for step, _ in data.sample_grids] == [30, 60]
    grid = Image.open(data.sample_grids[0][1])
    assert grid.size == (2 * 64, 14 + 64)  # one prompt x two seeds under a title
    assert [t.caption for t in data.thumbnails] == [item.caption for item in job.items]
    assert all(max(Image.open(t.image).size) <= 128 for t in data.thumbnails)
    assert data.summary["sha256"] == result.sha256
    assert data.summary["environment"]["threads"] == 1
    assert set(result.timings) == {"load", "features", "steps", "checkpoints", "total"}
