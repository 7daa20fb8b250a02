"""What an image made elsewhere says about how it was made: one neutral, frozen description
(``Generation``) that the A1111/Forge infotext parser (``load.infotext``) and the ComfyUI
workflow parser (``load.comfy_workflow``) both return, and the sampler names of both tools
read as OUR scheduler names.

A ``Generation`` holds what the source wrote, as written (model names, hashes), plus
``problems``: each setting we cannot express, in words naming the setting, its value and
what we support. Nothing is dropped or replaced silently: a value either lands in a field,
is a problem, or is one of the few a parser ignores on purpose (``ignored``; each parser's
docstring says which and why). Model names are not resolved to files here: the import step
does that (by hash where the source gives one).

Sampler names: A1111's ``Sampler`` names before 1.9 (with the schedule as a suffix,
"DPM++ 2M Karras") are each scheduler's ``a1111_name`` in ``SCHEDULERS`` (derived there from
the 1.9+ sampler and schedule type), so the reverse lookup is derived from that one table;
ComfyUI's names map onto A1111's first (``comfy_workflow``). A name several of ours share
("Euler": ``euler`` and Flux's ``flow_euler``) reads as the first in ``SCHEDULERS``' order,
the Stable Diffusion one: neither tool writes the model family next to the sampler, and the
import step knows it from the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from renderer.core.families import SCHEDULERS

# A1111 sampler name -> our scheduler name; built back to front, so that the first of ours
# wins a name several share (see above).
_BY_A1111_NAME = {scheduler.a1111_name: name for name, scheduler in reversed(SCHEDULERS.items())}
# For messages: the A1111 names we can express, in SCHEDULERS' order.
SUPPORTED_SAMPLERS = ", ".join(dict.fromkeys(s.a1111_name for s in SCHEDULERS.values()))


def scheduler_for(sampler: str, schedule: str | None = None) -> str | None:
    """Our scheduler whose A1111 name is ``sampler`` followed by ``schedule`` when given
    ("DPM++ 2M" + "Karras" -> ``dpmpp_2m_karras``); None when none of ours is."""
    return _BY_A1111_NAME.get(sampler if schedule is None else f"{sampler} {schedule}")


@dataclass(frozen=True)
class Checkpoint:
    name: str | None  # as written: A1111's ``Model`` (no extension), ComfyUI's ``ckpt_name``
    hash: str | None  # A1111's ``Model hash`` (its short hash); ComfyUI writes none


@dataclass(frozen=True)
class Lora:
    name: str  # as the prompt tag or the LoraLoader names it
    weight: float
    hash: str | None  # A1111's ``Lora hashes`` entry for this name, when there is one


@dataclass(frozen=True)
class ControlNet:
    model: str  # ControlNetLoader's control_net_name
    image: str  # LoadImage's file name (in ComfyUI's input folder)
    strength: float
    start: float  # fraction of the steps
    end: float


@dataclass(frozen=True)
class Hires:
    """A1111's Hires. fix: one of ``factor`` and ``size`` (a side of 0 follows the other)."""

    factor: float | None
    size: tuple[int, int] | None
    steps: int | None  # None: the base pass's steps (A1111 writes none, or 0, for that)
    denoise: float | None
    upscaler: str | None  # as written ("Latent", "R-ESRGAN 4x+", a model's name)
    scheduler: str | None  # ours; None: the base pass's (or inexpressible: see problems)


@dataclass(frozen=True)
class Generation:
    """How one image was made, as its source says, in our terms where we have them.

    A field is None where the source did not say, or said something we cannot express (then
    ``problems`` names it). ``source`` describes where it came from and takes no part in
    equality: the same generation read from two formats compares equal.
    """

    source: str = field(compare=False)
    prompt: str
    negative_prompt: str
    steps: int | None
    cfg: float | None
    seed: int | None
    width: int | None
    height: int | None
    scheduler: str | None  # ours (SCHEDULERS' key)
    checkpoint: Checkpoint | None
    loras: tuple[Lora, ...] = ()
    controlnets: tuple[ControlNet, ...] = ()
    hires: Hires | None = None
    clip_skip: int | None = None  # A1111's Clip skip (2: the penultimate layer); None: 1
    batch_size: int = 1  # images drawn from this one seed's noise together
    problems: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()  # settings present but ignored on purpose, by name
