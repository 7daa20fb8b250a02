"""Reading A1111/Forge infotext (a PNG's ``parameters`` text, what "PNG Info" shows) into a
``Generation``, by A1111's own rules (``modules/infotext_utils.py``,
``parse_generation_parameters``):

* the last line is the settings line when A1111's ``re_param`` finds at least 3 settings in
  it, else there is none (and this is not a generation's text: ``InputError``);
* the lines before it are the prompt, each stripped, until one starting "Negative prompt:";
  from there on they are the negative prompt;
* a setting is ``Key: value``; a value holding a comma, colon or newline is JSON-quoted
  (``"a, \\"b\\""``) and read back with ``json.loads``; the last of a repeated key wins.

The prompt's ``<lora:NAME:WEIGHT>`` tags (A1111's extra-network syntax, also spelt ``lyco``;
WEIGHT optional, 1.0; ``<lora:NAME:TE:UNET>`` and ``te=``/``unet=`` give the text encoder
and UNet their own) become ``loras``, with the hash ``Lora hashes`` gives the name; the
prompt is returned without them and the whitespace before each (CLIP's tokenizer collapses
whitespace, so this changes nothing the model sees). Other tags (``<hypernet:…>``) stay in
the prompt and are problems.

Samplers: before A1111 1.9 ``Sampler`` carries the schedule ("DPM++ 2M Karras"); since,
``Schedule type`` does ("DPM++ 2M" + "Karras"), and its ``Automatic`` means the sampler's
own default, which for DPM++ 2M became Karras in 1.9. A text without ``Schedule type`` is
read by the older convention, one with it (ours, as 1.9+ writes it) by the newer.

Ignored on purpose (``Generation.ignored``): ``Version`` (the writer's build, which changes
nothing we render; it is shown in ``source``), ``Batch size`` and ``Batch pos`` (A1111 draws
each image's noise from its own ``Seed``, which the text gives, so one image stands alone).
Every other setting we do not read is a problem.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import TypeVar

from renderer.core.errors import InputError
from renderer.core.families import A1111_AUTOMATIC, A1111_UNIFORM
from renderer.load.imported import (
    SUPPORTED_SAMPLERS,
    Checkpoint,
    Generation,
    Hires,
    Lora,
    scheduler_for,
)

# A1111's own patterns, verbatim: a setting of the settings line, an image size ("512x768"),
# an extra-network tag (modules/extra_networks.py).
_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_IMAGE_SIZE = re.compile(r"^(\d+)x(\d+)$")
_EXTRA_NETWORK = re.compile(r"[ \t]*<(\w+):([^>]+)>")  # with the whitespace before it
_MIN_SETTINGS = 3  # fewer on the last line: it is part of the prompt
_NEGATIVE = "Negative prompt:"

# A1111's facts about the samplers SCHEDULERS names (any other sampler is a problem anyway).
# Since 1.9 a sampler's "Automatic" schedule is its own default (sd_samplers_kdiffusion's
# options["scheduler"]); "Uniform" is the model's own sigmas, what a name without a
# schedule suffix meant before; DDIM and UniPC are sd_samplers_timesteps samplers, which
# take no schedule (the field is written but unused).
_DEFAULT_SCHEDULES = {"DPM++ 2M": "Karras"}
_TIMESTEP_SAMPLERS = ("DDIM", "UniPC")
_SAME_SAMPLER, _SAME_SCHEDULE = "Use same sampler", "Use same scheduler"  # Hires defaults
_LORA_NETWORKS = ("lora", "lyco")  # the names A1111's built-in Lora extension registers
_LORA_HASH_SYMBOLS = str.maketrans("", "", ":,")

IGNORED = ("Version", "Batch size", "Batch pos")  # why: the module docstring
_Number = TypeVar("_Number", int, float)


def parse_infotext(text: str) -> Generation:
    """The generation an A1111/Forge infotext describes; ``InputError`` when the text has no
    settings line."""
    prompt, negative_prompt, fields = read_settings(text)
    settings = _Settings(fields)
    lora_hashes = _lora_hashes(settings)
    prompt, loras = _take_loras(prompt, lora_hashes, settings.problems)
    named = {lora_hash_name(lora.name) for lora in loras}
    settings.problems += [
        f"Lora hashes names {name!r}, which no <lora:…> tag in the prompt uses"
        for name in lora_hashes
        if name not in named
    ]
    if tag := _EXTRA_NETWORK.search(negative_prompt):
        settings.problems.append(
            f"the negative prompt holds the extra-network tag {tag.group(0).strip()!r}, which "
            "we would pass to the text encoder as words; remove it"
        )
    settings.problems += [
        f"the text gives no {key}, which A1111 always writes"
        for key in ("Steps", "Sampler", "CFG scale", "Seed", "Size")
        if key not in settings.fields
    ]
    sampler, schedule = settings.take("Sampler"), settings.take("Schedule type")
    width, height = _size(settings, "Size")
    steps = settings.number("Steps", int)
    cfg = settings.number("CFG scale", float)
    seed = settings.number("Seed", int)
    scheduler = _scheduler(sampler, schedule, "Sampler", settings.problems)
    checkpoint = _checkpoint(settings)
    hires = _hires(settings, sampler, schedule)
    clip_skip = settings.number("Clip skip", int)
    settings.problems += [
        f"{key} {value!r}: a setting we cannot reproduce"
        for key, value in settings.left.items()
        if key not in IGNORED
    ]
    return Generation(
        source=_source(settings.fields.get("Version")),
        prompt=prompt,
        negative_prompt=negative_prompt,
        steps=steps,
        cfg=cfg,
        seed=seed,
        width=width,
        height=height,
        scheduler=scheduler,
        checkpoint=checkpoint,
        loras=loras,
        hires=hires,
        clip_skip=clip_skip,
        problems=tuple(settings.problems),
        ignored=tuple(key for key in settings.left if key in IGNORED),
    )


def read_settings(text: str) -> tuple[str, str, dict[str, str]]:
    """A1111's split of infotext: the prompt, the negative prompt and the settings line's
    values by key, unquoted (the last of a repeated key wins); ``InputError`` when the text
    has no settings line."""
    *lines, last = text.strip().split("\n")
    if len(_PARAM.findall(last)) < _MIN_SETTINGS:
        raise InputError(
            "this is not A1111 infotext: its last line holds no settings",
            found=last[:120],
            expected="a last line like 'Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, "
            "Size: 512x512'",
            fix="pass the whole PNG-info text of an image A1111 or Forge made",
        )
    prompt, negative_prompt = _prompts(lines)
    return prompt, negative_prompt, {key: _unquote(value) for key, value in _PARAM.findall(last)}


def lora_hash_name(name: str) -> str:
    """A LoRA's name as A1111's ``Lora hashes`` shows it: without the colons and commas that
    would end its entry (the Lora extension's ``remove_symbols``)."""
    return name.translate(_LORA_HASH_SYMBOLS)


class _Settings:
    """The settings line's values by key, taken one by one: what is left at the end is either
    ignored on purpose or a problem."""

    def __init__(self, fields: dict[str, str]) -> None:
        self.fields = fields
        self.left = dict(fields)
        self.problems: list[str] = []

    def take(self, key: str) -> str | None:
        return self.left.pop(key, None)

    def number(self, key: str, kind: Callable[[str], _Number]) -> _Number | None:
        """The value of ``key`` as a whole (``int``) or decimal (``float``) number; None when
        absent, or, with a problem, when it is not one."""
        text = self.take(key)
        if text is None:
            return None
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value):
            what = "a whole number" if kind is int else "a finite number"
            self.problems.append(f"{key} {text!r} is not {what}")
            return None
        return value


def _unquote(value: str) -> str:
    """A1111's ``unquote``: a JSON string when the value is quoted, else the value itself
    (and so when the quoted text is not valid JSON)."""
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        try:
            unquoted = json.loads(value)
        except ValueError:
            return value
        return unquoted if isinstance(unquoted, str) else value
    return value


def _prompts(lines: list[str]) -> tuple[str, str]:
    prompt: list[str] = []
    negative: list[str] = []
    target = prompt
    for line in lines:
        line = line.strip()
        if line.startswith(_NEGATIVE):
            target = negative
            line = line[len(_NEGATIVE) :].strip()
        target.append(line)
    return "\n".join(prompt), "\n".join(negative)


def _lora_hashes(settings: _Settings) -> dict[str, str]:
    """``Lora hashes: "name: hash, …"`` by name, split as A1111's Lora extension does."""
    text = settings.take("Lora hashes")
    hashes: dict[str, str] = {}
    for entry in text.split(",") if text else ():
        name, colon, lora_hash = entry.partition(":")
        if not colon:
            settings.problems.append(f"Lora hashes entry {entry.strip()!r} has no 'name: hash'")
            continue
        hashes[name.strip()] = lora_hash.strip()
    return hashes


def _take_loras(
    prompt: str, hashes: dict[str, str], problems: list[str]
) -> tuple[str, tuple[Lora, ...]]:
    loras: list[Lora] = []

    def take(tag: re.Match[str]) -> str:
        network, arguments = tag.group(1), tag.group(2)
        if network not in _LORA_NETWORKS:
            problems.append(
                f"prompt tag {tag.group(0).strip()!r}: {network} networks are not something "
                "we load; we load LoRAs (<lora:NAME:WEIGHT>)"
            )
            return tag.group(0)
        lora = _lora(arguments.split(":"), hashes, tag.group(0).strip(), problems)
        if lora is not None:
            loras.append(lora)
        return ""

    return _EXTRA_NETWORK.sub(take, prompt).strip(), tuple(loras)


def _lora(items: list[str], hashes: dict[str, str], tag: str, problems: list[str]) -> Lora | None:
    """A LoRA from a tag's arguments, as A1111's ``ExtraNetworkParams`` and Lora extension
    read them: positional NAME, TE, UNET, DYN; or ``te=``, ``unet=``, ``dyn=``."""
    named = {
        key: value
        for key, _, value in (item.partition("=") for item in items if item.count("=") == 1)
    }
    positional = [item for item in items if item.count("=") != 1]
    name = positional[0] if positional else ""
    try:
        text_encoder = float(named.get("te", positional[1] if len(positional) > 1 else 1.0))
        unet = float(named.get("unet", positional[2] if len(positional) > 2 else text_encoder))
    except ValueError:
        problems.append(f"prompt tag {tag!r}: its weight is not a number")
        return None
    if not name:
        problems.append(f"prompt tag {tag!r} names no LoRA")
        return None
    if text_encoder != unet:
        problems.append(
            f"prompt tag {tag!r} weighs the text encoder {text_encoder:g} and the UNet "
            f"{unet:g}; we give a LoRA one weight for both (read as {unet:g})"
        )
    if "dyn" in named or len(positional) > 3:
        problems.append(f"prompt tag {tag!r} sets a dynamic rank (dyn), which we do not")
    return Lora(name=name, weight=unet, hash=hashes.get(lora_hash_name(name)))


def _size(settings: _Settings, key: str) -> tuple[int | None, int | None]:
    text = settings.take(key)
    if text is None:
        return None, None
    if match := _IMAGE_SIZE.match(text):
        return int(match.group(1)), int(match.group(2))
    settings.problems.append(f"{key} {text!r} is not WIDTHxHEIGHT")
    return None, None


def _scheduler(
    sampler: str | None, schedule: str | None, field: str, problems: list[str]
) -> str | None:
    """Our scheduler for A1111's sampler and schedule type (None: a text from before 1.9)."""
    if sampler is None:
        return None
    if schedule in (None, A1111_UNIFORM) or sampler in _TIMESTEP_SAMPLERS:
        ours = scheduler_for(sampler)
    elif schedule == A1111_AUTOMATIC:
        ours = scheduler_for(sampler, _DEFAULT_SCHEDULES.get(sampler))
    else:
        ours = scheduler_for(sampler, schedule)
    if ours is None:
        with_schedule = f" with schedule type {schedule!r}" if schedule is not None else ""
        problems.append(
            f"{field} {sampler!r}{with_schedule} is not one we can render; we support "
            f"{SUPPORTED_SAMPLERS} (a schedule type of {A1111_AUTOMATIC} or {A1111_UNIFORM}, "
            "or the suffix the name shows)"
        )
    return ours


def _checkpoint(settings: _Settings) -> Checkpoint | None:
    name, short_hash = settings.take("Model"), settings.take("Model hash")
    if name is None and short_hash is None:
        settings.problems.append("the text names no checkpoint (no Model or Model hash)")
        return None
    return Checkpoint(name=name, hash=short_hash)


def _hires(settings: _Settings, sampler: str | None, schedule: str | None) -> Hires | None:
    """A1111's Hires. fix fields; without ``Hires upscale`` or ``Hires resize`` there is no
    hires pass, and a ``Denoising strength`` is an img2img's."""
    has_factor = "Hires upscale" in settings.left
    has_size = "Hires resize" in settings.left
    denoise = settings.number("Denoising strength", float)
    if not has_factor and not has_size:
        if denoise is not None:
            settings.problems.append(
                f"Denoising strength {denoise:g} without Hires upscale or Hires resize: an "
                "img2img or inpaint image, whose source image the text does not hold"
            )
        return None
    factor = settings.number("Hires upscale", float)
    width, height = _size(settings, "Hires resize") if has_size else (None, None)
    if has_factor and has_size:
        settings.problems.append("both Hires upscale and Hires resize are given; give one")
    steps = settings.number("Hires steps", int)
    hires_sampler = settings.take("Hires sampler")
    hires_schedule = settings.take("Hires schedule type")
    scheduler = None
    if hires_sampler not in (None, _SAME_SAMPLER) or hires_schedule not in (None, _SAME_SCHEDULE):
        scheduler = _scheduler(
            hires_sampler if hires_sampler not in (None, _SAME_SAMPLER) else sampler,
            hires_schedule if hires_schedule not in (None, _SAME_SCHEDULE) else schedule,
            "Hires sampler",
            settings.problems,
        )
    if denoise is None:
        settings.problems.append("the hires pass gives no Denoising strength")
    return Hires(
        factor=factor,
        size=(width, height) if width is not None and height is not None else None,
        steps=steps or None,  # A1111: 0 (or none) is the base pass's steps
        denoise=denoise,
        upscaler=settings.take("Hires upscaler"),
        scheduler=scheduler,
    )


def _source(version: str | None) -> str:
    return "A1111 infotext" + (f", Version {version}" if version else "")
