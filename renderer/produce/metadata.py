"""What every output image says about itself, inside the PNG.

* ``parameters`` — A1111's PNG-info text byte for byte as 1.10 writes it (``Sampler`` and
  ``Schedule type``, each value quoted by its rule), so existing readers (A1111, ComfyUI,
  Civitai) show prompt, sampler, seed and model hashes (LoRAs by A1111's own "addnet"
  hash, which only the LoRA file can give: ``LoraHashes``, never the spec, so ids do not
  move);
* ``campaign_variant`` — the variant's canonical JSON (its id is the sha256 of it);
* ``campaign_render`` — what decides the file's bytes besides its spec (``RenderContext``):
  its output name, the batch it was rendered in (each member's id and where its spec
  differs from this one's, so the batch is formed again from the file alone), the render
  options that change pixels set away from their defaults, and a single-file checkpoint's
  config folder by name and hash;
* ``XML:com.adobe.xmp`` — XMP with IPTC ``Iptc4xmpExt:DigitalSourceType`` declaring
  the image AI-made (trainedAlgorithmicMedia) and, for a refined variant, an
  ``xmpMM:History`` naming the base render and each refine step in order.

A refined variant's ``parameters`` carry A1111's hires fields (``Denoising strength``,
``Hires upscale`` or ``Hires resize``, ``Hires steps``, ``Hires upscaler``), its refiner's
(``Refiner``, ``Refiner switch at``) and ADetailer's per detailer, so A1111 readers show them.

Nothing time- or location-dependent goes in, so one variant rendered in the same batch with
the same options under the same output name always gives the same bytes.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypedDict
from xml.sax.saxutils import escape, quoteattr

from PIL import Image
from PIL.PngImagePlugin import PngImageFile, PngInfo
from pydantic import Field, field_validator

from postprocess.embedded_metadata import PARAMETERS_KEY, RENDER_KEY, VARIANT_KEY
from postprocess.embedded_metadata import XMP_PNG_KEY as XMP_KEY
from postprocess.hires import LATENT_UPSCALERS
from renderer.core.errors import InputError
from renderer.core.families import SCHEDULERS, Scheduler
from renderer.core.hashing import canonical_json, short_hash
from renderer.core.json_value import JsonObject, JsonValue
from renderer.core.version import __version__
from renderer.load.campaign_schema import RenderSpec
from renderer.load.infotext import lora_hash_name, read_settings
from renderer.load.schema import FileId, Sha256, Strict
from renderer.plan.output_folder import master_path, path_problem
from renderer.plan.variant_spec import (
    PER_IMAGE_FIELDS,
    DetailUse,
    HiresUse,
    RefinerUse,
    RefineUse,
    UpscaleUse,
    VariantSpec,
)
from renderer.render.options import RenderOptions
from renderer.weights.hashes import LORA_SHORT_HASH, addnet_hash

SOFTWARE = f"campaign-renderer {__version__}"
IPTC_SOURCE_TYPES = "http://cv.iptc.org/newscodes/digitalsourcetype/"
TRAINED_ALGORITHMIC_MEDIA = IPTC_SOURCE_TYPES + "trainedAlgorithmicMedia"
COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA = (
    IPTC_SOURCE_TYPES + "compositeWithTrainedAlgorithmicMedia"
)

# What A1111 1.9+ writes as ``Sampler`` for each scheduler (its schedule is ``Schedule type``).
A1111_SAMPLER_NAMES = {name: scheduler.a1111_sampler for name, scheduler in SCHEDULERS.items()}


class LoraHashes:
    """The A1111 hash of each LoRA a spec uses, from its file (found by sha256), computed
    once per file content."""

    def __init__(self, path_of: Callable[[FileId], Path]):
        self.path_of = path_of
        self._known: dict[str, str] = {}  # file sha256 -> its A1111 hash

    def of(self, spec: VariantSpec) -> tuple[str, ...]:
        hashes = []
        for lora in spec.recipe.loras:
            if lora.sha256 not in self._known:
                self._known[lora.sha256] = addnet_hash(self.path_of(lora))
            hashes.append(self._known[lora.sha256])
        return tuple(hashes)


def a1111_parameters(spec: VariantSpec, lora_hashes: Sequence[str] = ()) -> str:
    """The PNG-info text A1111 1.10 writes for these settings (``create_infotext``): its
    fields in its order, each value quoted by its rule (``_quote``), from a variant's spec
    and the A1111 hash of each of its LoRAs (``LoraHashes.of``), in the recipe's order."""
    recipe = spec.recipe
    if len(lora_hashes) != len(recipe.loras):
        raise ValueError(
            f"{len(recipe.loras)} LoRA(s) but {len(lora_hashes)} hash(es); pass "
            "LoraHashes(files.path).of(spec)"
        )
    lora_names = [_stem(lora.name) for lora in recipe.loras]
    lora_tags = "".join(
        f" <lora:{name}:{_number(lora.weight)}>"
        for name, lora in zip(lora_names, recipe.loras, strict=True)
    )
    scheduler = SCHEDULERS[recipe.scheduler]
    refine = recipe.refine or RefineUse()
    fields: list[tuple[str, str | int]] = [
        ("Steps", recipe.steps),
        ("Sampler", A1111_SAMPLER_NAMES[recipe.scheduler]),
        ("Schedule type", scheduler.a1111_schedule),  # 1.9+ writes it for every sampler
        ("CFG scale", _number(recipe.cfg)),
        ("Seed", spec.seed),
        ("Size", f"{spec.width}x{spec.height}"),
        ("Model hash", short_hash(recipe.checkpoint.sha256)),
        ("Model", _stem(recipe.checkpoint.name)),
    ]
    # Then A1111's extra fields in the order they are set: ADetailer's (a script's process,
    # before the hires pass's init), the hires pass's, the LoRAs' (as their networks load),
    # the refiner's (while sampling).
    if refine.hires:
        fields.append(("Denoising strength", _number(refine.hires.denoise)))
    fields += _detail_fields(spec)
    if refine.hires:
        fields += _hires_fields(refine.hires, scheduler)
    if recipe.loras:
        hashes = ", ".join(
            f"{lora_hash_name(name)}: {lora_hash[:LORA_SHORT_HASH]}"
            for name, lora_hash in zip(lora_names, lora_hashes, strict=True)
        )
        fields.append(("Lora hashes", hashes))
    if refiner := refine.refiner:
        fields += [
            (
                "Refiner",
                f"{_stem(refiner.checkpoint.name)} [{short_hash(refiner.checkpoint.sha256)}]",
            ),
            ("Refiner switch at", _number(refiner.switch_at)),
        ]
    if upscale := refine.upscale:
        fields.append(("Postprocess upscaler", _stem(upscale.model.name)))
    fields.append(("Version", SOFTWARE))
    # A1111 writes a value equal to its key as the key alone.
    settings = ", ".join(
        key if key == str(value) else f"{key}: {_quote(str(value))}" for key, value in fields
    )
    negative = f"\nNegative prompt: {spec.negative_prompt}" if spec.negative_prompt else ""
    return f"{spec.prompt}{lora_tags}{negative}\n{settings}".strip()


def _hires_fields(hires: HiresUse, base: Scheduler) -> list[tuple[str, str | int]]:
    """A1111's hires fields; its sampler and schedule type where they differ from the base
    pass's (A1111 reads an absent one as the same). A1111 leaves out a schedule type that
    has no sigma function of its own (an "Automatic" without a default), and its reader then
    takes the base pass's: we write it, so the pass reads back as it ran."""
    fields: list[tuple[str, str | int]] = []
    if hires.scheduler is not None:
        own = SCHEDULERS[hires.scheduler]
        if own.a1111_sampler != base.a1111_sampler:
            fields.append(("Hires sampler", own.a1111_sampler))
        if own.a1111_schedule != base.a1111_schedule:
            fields.append(("Hires schedule type", own.a1111_schedule))
    fields.append(
        ("Hires resize", f"{hires.size[0]}x{hires.size[1]}")
        if hires.size is not None
        else ("Hires upscale", _number(hires.factor or 0))  # validate: one of the two
    )
    if hires.steps is not None:
        fields.append(("Hires steps", hires.steps))
    fields.append(("Hires upscaler", _hires_upscaler(hires)))
    return fields


def _detail_fields(spec: VariantSpec) -> list[tuple[str, str | int]]:
    """ADetailer's fields for each detailer, in its order (the second one's keys end in
    " 2nd", …), with the switches it writes beside the values they turn on."""
    fields: list[tuple[str, str | int]] = []
    for index, detail in enumerate((spec.recipe.refine or RefineUse()).detail or ()):
        suffix = "" if index == 0 else f" {_ordinal(index + 1)}"
        fields.append((f"ADetailer model{suffix}", detail.detect))
        for key, name in (("prompt", "prompt"), ("negative_prompt", "negative prompt")):
            text = (spec.refine_prompts or {}).get(f"refine.detail.{index}.{key}")
            if text is not None:
                fields.append((f"ADetailer {name}{suffix}", text))
        fields += [
            (f"ADetailer mask blur{suffix}", detail.feather),
            (f"ADetailer denoising strength{suffix}", _number(detail.strength)),
            (f"ADetailer inpaint only masked{suffix}", "True"),  # each region's crop
            (f"ADetailer inpaint padding{suffix}", detail.padding),
        ]
        if detail.steps is not None:
            fields += [
                (f"ADetailer use separate steps{suffix}", "True"),
                (f"ADetailer steps{suffix}", detail.steps),
            ]
    return fields


def refine_history(spec: VariantSpec) -> list[tuple[str, str]]:
    """(XMP stEvt:action, what was done) for the base render and each refine step, in the
    order they ran; empty for a variant without refine (its XMP has no history)."""
    recipe = spec.recipe
    if recipe.refine is None:
        return []
    events = [
        (
            "created",
            f"base: {recipe.family} {_stem(recipe.checkpoint.name)} "
            f"{spec.width}x{spec.height}, {recipe.steps} steps",
        )
    ]
    size = (spec.width, spec.height)
    for name, step in recipe.refine.steps():
        events.append(REFINE_EVENTS[name](step, size, recipe.family))
    return events


def _refiner_event(refiner: RefinerUse, size: tuple[int, int], family: str) -> tuple[str, str]:
    return (
        "edited",
        f"refiner: {_stem(refiner.checkpoint.name)} from {_number(refiner.switch_at)} of the steps",
    )


def _hires_event(hires: HiresUse, size: tuple[int, int], family: str) -> tuple[str, str]:
    width, height = hires.target_size(size, family)
    return (
        "resized",
        f"hires: {_hires_upscaler(hires)} to {width}x{height}, denoise {_number(hires.denoise)}",
    )


def _upscale_event(upscale: UpscaleUse, size: tuple[int, int], family: str) -> tuple[str, str]:
    return ("resized", f"upscale: {_stem(upscale.model.name)}")


def _detail_event(detail: DetailUse, size: tuple[int, int], family: str) -> tuple[str, str]:
    return ("edited", f"detail: {detail.detect}, strength {_number(detail.strength)}")


# Each refine step's XMP history event (stEvt:action, what was done), by step name.
REFINE_EVENTS: dict[str, Callable[[Any, tuple[int, int], str], tuple[str, str]]] = {
    "refiner": _refiner_event,
    "hires": _hires_event,
    "upscale": _upscale_event,
    "detail": _detail_event,
}


def _hires_upscaler(hires: HiresUse) -> str:
    if hires.upscaler in LATENT_UPSCALERS:
        return LATENT_UPSCALERS[hires.upscaler].a1111_name
    return _stem(hires.model.name) if hires.model is not None else "Lanczos"  # upscaler: model


def _ordinal(number: int) -> str:
    """2nd, 3rd, 11th: how ADetailer names the keys of its second and later detailers."""
    ending = (
        "th" if 10 <= number % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    )
    return f"{number}{ending}"


def _quote(text: str) -> str:
    """A value as A1111 writes it (``infotext_utils.quote``): JSON-quoted when it holds a
    comma, colon or newline, else as it is (quotes and all)."""
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ",:\n") else text


def parse_a1111_parameters(text: str) -> dict[str, str | dict[str, float]]:
    """A1111 PNG-info text read back by A1111's rules (``infotext.read_settings``): the
    prompt without its LoRA tags, the negative prompt, each LoRA's weight by name and each
    setting by key."""
    prompt, negative_prompt, settings = read_settings(text)
    loras = re.findall(r"<lora:([^:>]+):([^>]+)>", prompt)
    return {
        "prompt": re.sub(r"\s*<lora:[^>]+>", "", prompt),
        "negative_prompt": negative_prompt,
        "loras": {name: float(weight) for name, weight in loras},
        **settings,
    }


def xmp_packet(
    prompt: str,
    source_type: str = TRAINED_ALGORITHMIC_MEDIA,
    history: Sequence[tuple[str, str]] = (),
) -> str:
    """The XMP packet; ``history`` (action, parameters) becomes ``xmpMM:History``, without
    the events' ``when`` (files stay deterministic). Without it the packet is as before
    refine existed, byte for byte."""
    namespaces, events = "", ""
    if history:
        namespaces = (
            '    xmlns:xmpMM="http://ns.adobe.com/xap/1.0/mm/"\n'
            '    xmlns:stEvt="http://ns.adobe.com/xap/1.0/sType/ResourceEvent#"\n'
        )
        events = (
            "   <xmpMM:History><rdf:Seq>\n"
            + "".join(
                f'    <rdf:li rdf:parseType="Resource"><stEvt:action>{escape(action)}'
                f"</stEvt:action><stEvt:softwareAgent>{escape(SOFTWARE)}</stEvt:softwareAgent>"
                f"<stEvt:parameters>{escape(parameters)}</stEvt:parameters></rdf:li>\n"
                for action, parameters in history
            )
            + "   </rdf:Seq></xmpMM:History>\n"
        )
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
        ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        '  <rdf:Description rdf:about=""\n'
        '    xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"\n'
        '    xmlns:xmp="http://ns.adobe.com/xap/1.0/"\n'
        '    xmlns:dc="http://purl.org/dc/elements/1.1/"\n'
        f"{namespaces}"
        f"    Iptc4xmpExt:DigitalSourceType={quoteattr(source_type)}\n"
        f"    xmp:CreatorTool={quoteattr(SOFTWARE)}>\n"
        '   <dc:description><rdf:Alt><rdf:li xml:lang="x-default">'
        f"{escape(prompt)}</rdf:li></rdf:Alt></dc:description>\n"
        f"{events}"
        "  </rdf:Description>\n"
        " </rdf:RDF>\n"
        "</x:xmpmeta>\n"
        '<?xpacket end="r"?>'
    )


def digital_source_type(spec: VariantSpec) -> str:
    """AI-made, or a real photo partly repainted by AI (img2img/inpaint of a photograph)."""
    source = spec.recipe.img2img or spec.recipe.inpaint
    return (
        COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA
        if source and source.source_is_photo
        else TRAINED_ALGORITHMIC_MEDIA
    )


# ---------------------------------------------------------------- campaign_render

# The most bytes a file's campaign_render takes: a batch whose members would not fit is left
# out (``batch_size`` says how many images it had). A JPEG holds its whole XMP packet, the
# spec and this included, in one 64 KiB segment.
MAX_RENDER_BYTES = 16 * 1024
# A member's entry is at least {"id":"<64 hex>"} and a comma.
_MEMBER_MIN_BYTES = 74
# The spec keys in which the images of one pipeline call may differ (the rest is their batch
# key), as the JSON names them.
MATE_KEYS = tuple(sorted(VariantSpec.model_fields[name].alias or name for name in PER_IMAGE_FIELDS))


class BatchMember(Strict):
    """One image of the pipeline call that rendered a file, in call order: its id, and where
    its spec differs from the file's (``differs``, read by ``merged``; empty for the file's
    own variant)."""

    id: Sha256
    differs: dict[Literal[MATE_KEYS], Any] = Field(default_factory=dict)  # type: ignore[valid-type]


class RenderContext(Strict):
    """What decides a file's bytes besides its spec: the ``campaign_render`` metadata. From
    an image it is untrusted input, checked here and by ``campaign reproduce`` (each
    member's rebuilt spec must hash to its id)."""

    output_name: str = Field(
        min_length=1,
        description="The variant's output name: its "
        "files' path below CAMPAIGN/RECIPE@VERSION/, without extension.",
    )
    batch: list[BatchMember] | None = Field(
        default=None,
        min_length=2,
        description="The images of the pipeline call that "
        "rendered it, in order; absent when it was rendered alone.",
    )
    batch_size: int | None = Field(
        default=None,
        ge=2,
        description="How many images that call had, when their list "
        f"would take campaign_render over {MAX_RENDER_BYTES} bytes (then absent: batch).",
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="The render options that change pixels, where "
        "they were set away from their defaults.",
    )
    checkpoint_config: FileId | None = Field(
        default=None, description="A single-file checkpoint's diffusers config folder."
    )

    @field_validator("output_name")
    @classmethod
    def _relative_name(cls, name: str) -> str:
        if problem := path_problem(master_path("", name), "master"):
            raise ValueError(f"output name {name!r}: {problem}")
        return name

    @field_validator("options")
    @classmethod
    def _pixel_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        if others := sorted(set(options) - RenderOptions.changing_pixels()):
            raise ValueError(
                f"{', '.join(others)}: not a render option that changes pixels "
                f"(those are {', '.join(sorted(RenderOptions.changing_pixels()))})"
            )
        RenderSpec.model_validate(options)  # the ranges a campaign file's render block has
        return options

    @classmethod
    def read(cls, text: str) -> RenderContext:
        """The context a file carries. Raises ``ValueError`` (pydantic's ValidationError for
        a bad value) naming what is wrong."""
        if len(text.encode("utf-8")) > MAX_RENDER_BYTES:
            raise ValueError(
                f"it is {len(text.encode('utf-8'))} bytes; campaign render "
                f"writes at most {MAX_RENDER_BYTES}"
            )
        return cls.model_validate_json(text)

    def text(self) -> str:
        """The canonical JSON the file carries (empty and unset fields left out)."""
        return canonical_json(self.model_dump(mode="json", exclude_defaults=True))

    def members(self, spec: JsonObject) -> list[tuple[str, dict[str, JsonValue]]]:
        """Each batch member's (id, spec), rebuilt from the file's own ``spec``."""
        return [(member.id, merged(spec, member.differs)) for member in self.batch or ()]


def render_context(
    output_name: str,
    spec: JsonObject,
    call: Sequence[tuple[str, JsonObject]],
    options: JsonObject,
    checkpoint_config: FileId | None,
) -> RenderContext:
    """The context of a file of the variant with ``spec``: rendered in ``call`` ((id, spec)
    of each image of its pipeline call, in order) with render ``options`` (a fingerprint's,
    every option given)."""
    context = RenderContext(
        output_name=output_name, options=pixel_options(options), checkpoint_config=checkpoint_config
    )
    if len(call) < 2:
        return context
    members = [
        BatchMember(id=member, differs=found)
        for member, other in call
        if (found := _differences(spec, other)) is not None
    ]
    if len(call) * _MEMBER_MIN_BYTES <= MAX_RENDER_BYTES and len(members) == len(call):
        batched = context.model_copy(update={"batch": members})
        if len(batched.text().encode("utf-8")) <= MAX_RENDER_BYTES:
            return batched
    return context.model_copy(update={"batch_size": len(call)})


def pixel_options(options: JsonObject) -> dict[str, JsonValue]:
    """Of a fingerprint's render ``options``, those that change pixels set away from their
    defaults."""
    defaults = RenderOptions()
    return {
        name: options[name]
        for name in sorted(RenderOptions.changing_pixels())
        if name in options and options[name] != getattr(defaults, name)
    }


def _differences(own: JsonObject, other: JsonObject) -> dict[str, JsonValue] | None:
    """Where ``other`` differs from ``own``, as ``merged`` reads it: a mapping in both gives
    the keys that differ inside it, any other value replaces (compared as JSON: 1, 1.0 and
    true differ). None when ``other`` lacks a key ``own`` has: a removal it cannot say."""
    if own.keys() - other.keys():
        return None
    found: dict[str, JsonValue] = {}
    for key, value in other.items():
        mine = own.get(key)
        if isinstance(value, Mapping) and isinstance(mine, Mapping):
            inner = _differences(mine, value)
            if inner is None:
                return None
            if inner:
                found[key] = inner
        elif key not in own or canonical_json(value) != canonical_json(mine):
            found[key] = value
    return found


def merged(own: JsonObject, differs: JsonObject) -> dict[str, JsonValue]:
    """``own`` with ``differs`` in place (``_differences`` gives it)."""
    result: dict[str, JsonValue] = dict(own)
    for key, value in differs.items():
        mine = own.get(key)
        result[key] = (
            merged(mine, value)
            if isinstance(value, Mapping) and isinstance(mine, Mapping)
            else value
        )
    return result


# ---------------------------------------------------------------- encoding


def file_metadata(
    spec: VariantSpec, lora_hashes: Sequence[str] = (), context: RenderContext | None = None
) -> tuple[dict[str, str], str]:
    """What every file of a variant carries: the text blocks by key (``campaign_render``
    given its ``context``), and the XMP packet."""
    texts = {
        PARAMETERS_KEY: a1111_parameters(spec, lora_hashes),
        VARIANT_KEY: canonical_json(spec.to_json()),
    }
    if context is not None:
        texts[RENDER_KEY] = context.text()
    return texts, xmp_packet(spec.prompt, digital_source_type(spec), refine_history(spec))


def encode_png(
    image: Image.Image,
    spec: VariantSpec,
    lora_hashes: Sequence[str] = (),
    context: RenderContext | None = None,
) -> bytes:
    """PNG bytes carrying the metadata blocks; deterministic for equal inputs."""
    texts, xmp = file_metadata(spec, lora_hashes, context)
    info = PngInfo()
    info.add_text(PARAMETERS_KEY, texts.pop(PARAMETERS_KEY))
    for key, text in texts.items():
        info.add_itxt(key, text)
    info.add_itxt(XMP_KEY, xmp)
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


class PngMetadata(TypedDict, total=False):
    """What ``read_png_metadata`` finds: a key for each block the file has."""

    parameters: dict[str, str | dict[str, float]]  # parse_a1111_parameters
    variant: JsonValue
    digital_source_type: str | None
    history: list[str]


def read_png_metadata(data: bytes) -> PngMetadata:
    """The three blocks of a PNG written by ``encode_png`` (missing ones are absent)."""
    with Image.open(io.BytesIO(data)) as image:
        text = dict(image.text) if isinstance(image, PngImageFile) else {}
    result: PngMetadata = {}
    if PARAMETERS_KEY in text:
        # A text with no settings line is none encode_png wrote: absent, like a missing block.
        with contextlib.suppress(InputError):
            result["parameters"] = parse_a1111_parameters(text[PARAMETERS_KEY])
    if VARIANT_KEY in text:
        result["variant"] = json.loads(text[VARIANT_KEY])
    if XMP_KEY in text:
        match = re.search(r'Iptc4xmpExt:DigitalSourceType="([^"]+)"', text[XMP_KEY])
        result["digital_source_type"] = match.group(1) if match else None
        result["history"] = re.findall(
            r"<stEvt:parameters>([^<]*)</stEvt:parameters>", text[XMP_KEY]
        )
    return result


def _stem(file_name: str) -> str:
    return file_name.rsplit(".", 1)[0] if file_name.endswith(".safetensors") else file_name


def _number(value: float) -> str:
    return f"{value:g}"
