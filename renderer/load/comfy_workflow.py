"""Reading a ComfyUI workflow into a ``Generation``: the API format (what ``/prompt`` runs
and a PNG's ``prompt`` chunk holds: node id -> ``{class_type, inputs}``, a link as
``[node id, output index]``), the UI format (what "Save" writes and a PNG's ``workflow``
chunk holds: ``nodes`` with ``widgets_values`` and ``inputs``, ``links`` as
``[id, from node, from slot, to node, to slot, type]``), or a PNG's text chunks themselves
(``{"prompt": "<json>", "workflow": "<json>"}``; the API prompt is read when present: it
is what ran).

A UI workflow is first turned into the API form the way ComfyUI's frontend does it
(``graphToPrompt``): widget values by the node's input names, the seed widgets'
``control_after_generate`` and LoadImage's upload button left out, Reroute nodes followed,
a PrimitiveNode's value taken from the widget it feeds. So both formats of one workflow give
the same ``Generation``. A muted or bypassed node on the way is refused (the API prompt
leaves it out; enable or delete it and save again).

The graph is followed back from the SaveImage/PreviewImage node: VAEDecode <- KSampler (or
KSamplerAdvanced run as one) <- the model through a LoraLoader chain <- CheckpointLoaderSimple;
the positive and negative CLIPTextEncode, through ControlNetApply(Advanced) nodes (each with
ControlNetLoader and LoadImage); EmptyLatentImage for size and batch. A node of any other
class reachable from the output is refused, all of them listed.

A LoRA's weight is its LoraLoader's ``strength_model``; a ``strength_clip`` that differs is a
problem (we give a LoRA one weight for the UNet and the text encoder), and so is a text
encoder whose LoRA chain is not the model's. ``batch_size`` is kept: ComfyUI draws one noise
tensor for the whole batch from the seed, so image k of a batch needs the batch.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from renderer.core.errors import InputError
from renderer.load.imported import Checkpoint, ControlNet, Generation, Lora, scheduler_for

# ComfyUI's names for what our SCHEDULERS express, as A1111 names them (scheduler_for maps
# those to ours). ComfyUI's "normal" schedule is k-diffusion's model sigmas, what an A1111
# sampler name without a schedule means (None here).
COMFY_SAMPLERS = {
    "euler": "Euler",
    "euler_ancestral": "Euler a",
    "dpmpp_2m": "DPM++ 2M",
    "ddim": "DDIM",
    "uni_pc": "UniPC",
}
COMFY_SCHEDULES: dict[str, str | None] = {"normal": None, "karras": "Karras"}
SUPPORTED_COMFY_SAMPLERS = ", ".join(
    f"{sampler}/{schedule}"
    for sampler, a1111_sampler in COMFY_SAMPLERS.items()
    for schedule, a1111_schedule in COMFY_SCHEDULES.items()
    if scheduler_for(a1111_sampler, a1111_schedule) is not None
)

# Each node class we read, with its widgets in the order the UI format saves their values
# (the node's INPUT_TYPES order; None: a frontend-only widget the API prompt leaves out).
_FRONTEND_ONLY = None
WIDGETS: dict[str, tuple[str | None, ...]] = {
    "CheckpointLoaderSimple": ("ckpt_name",),
    "LoraLoader": ("lora_name", "strength_model", "strength_clip"),
    "CLIPTextEncode": ("text",),
    "EmptyLatentImage": ("width", "height", "batch_size"),
    "KSampler": ("seed", _FRONTEND_ONLY, "steps", "cfg", "sampler_name", "scheduler", "denoise"),
    "KSamplerAdvanced": (
        "add_noise",
        "noise_seed",
        _FRONTEND_ONLY,
        "steps",
        "cfg",
        "sampler_name",
        "scheduler",
        "start_at_step",
        "end_at_step",
        "return_with_leftover_noise",
    ),
    "ControlNetLoader": ("control_net_name",),
    "ControlNetApply": ("strength",),
    "ControlNetApplyAdvanced": ("strength", "start_percent", "end_percent"),
    "LoadImage": ("image", _FRONTEND_ONLY),
    "VAEDecode": (),
    "SaveImage": ("filename_prefix",),
    "PreviewImage": (),
}
_OUTPUTS = ("SaveImage", "PreviewImage")
_SAMPLERS = ("KSampler", "KSamplerAdvanced")
_REROUTE, _PRIMITIVE = "Reroute", "PrimitiveNode"  # UI-only nodes graphToPrompt resolves
_MODES = {2: "muted", 4: "bypassed"}  # LiteGraph node modes other than 0 (always)
_Value = TypeVar("_Value", int, float, str)
# The frontend resolves {a|b} at random when it queues a UI workflow's text.
_DYNAMIC_PROMPT = re.compile(r"\{[^{}]*\|[^{}]*\}")


@dataclass(frozen=True)
class _Node:
    id: str
    class_type: str
    inputs: Mapping[str, object]  # a value, or a link: [node id, output index]
    off: str | None = None  # UI format: "muted" or "bypassed" (refused when reachable)


def parse_comfy_workflow(data: Mapping[str, object]) -> Generation:
    """The generation a ComfyUI workflow (API or UI format, or a PNG's text chunks) makes;
    ``InputError`` when it is not one we can follow."""
    if isinstance(data.get("prompt"), str) or isinstance(data.get("workflow"), str):
        key = "prompt" if isinstance(data.get("prompt"), str) else "workflow"
        try:
            chunk = json.loads(str(data[key]))
        except ValueError as error:
            raise InputError(
                f"the PNG's {key!r} chunk is not JSON: {error}",
                fix="pass the chunks of a PNG ComfyUI saved, unchanged",
            ) from error
        if not isinstance(chunk, Mapping):
            raise InputError(f"the PNG's {key!r} chunk is not a JSON object", found=str(chunk))
        return parse_comfy_workflow(chunk)
    if isinstance(data.get("nodes"), list):
        return _Graph(_from_ui(data), from_ui=True).generation()
    return _Graph(_from_api(data), from_ui=False).generation()


# ---------------------------------------------------------------- the two formats


def _from_api(data: Mapping[str, object]) -> dict[str, _Node]:
    nodes = {}
    for node_id, node in data.items():
        if not (
            isinstance(node, Mapping)
            and isinstance(node.get("class_type"), str)
            and isinstance(node.get("inputs"), Mapping)
        ):
            raise InputError(
                f"entry {node_id!r} is not an API-format node",
                found=str(node)[:120],
                expected='{"class_type": "...", "inputs": {...}} for each node id, or a UI '
                'workflow with "nodes" and "links"',
                fix="save the workflow with ComfyUI's Save or Export (API), unchanged",
            )
        nodes[str(node_id)] = _Node(str(node_id), str(node["class_type"]), node["inputs"])
    return nodes


def _from_ui(data: Mapping[str, object]) -> dict[str, _Node]:
    """The API form of a UI workflow, as ComfyUI's frontend makes it (``graphToPrompt``)."""
    raw_nodes = _objects(data.get("nodes"), "nodes")
    by_id = {str(node.get("id")): node for node in raw_nodes}
    links: dict[object, tuple[str, int]] = {}
    raw_links = data.get("links") or []
    if not isinstance(raw_links, list):
        raise InputError("the workflow's links are not a list", found=str(raw_links)[:120])
    for link in raw_links:  # [id, from, from slot, to, to slot, type], or a dict of those
        if isinstance(link, Mapping):
            link = [link.get(key) for key in ("id", "origin_id", "origin_slot")]
        if not (isinstance(link, list) and len(link) >= 3 and isinstance(link[2], int)):
            raise InputError("a link of the workflow is malformed", found=str(link)[:120])
        links[link[0]] = (str(link[1]), link[2])

    def origin(link_id: object) -> tuple[str, int]:
        """Where a link starts, through Reroute nodes."""
        if link_id not in links:
            raise InputError(f"the workflow uses link {link_id!r}, which its links lack")
        node_id, slot = links[link_id]
        node = by_id.get(node_id, {})
        if node.get("type") == _REROUTE:
            rerouted = _objects(node.get("inputs"), f"node {node_id} inputs")
            if rerouted and rerouted[0].get("link") is not None:
                return origin(rerouted[0].get("link"))
        return node_id, slot

    nodes = {}
    for node_id, node in by_id.items():
        class_type = str(node.get("type"))
        if class_type in (_REROUTE, _PRIMITIVE):
            continue
        inputs: dict[str, object] = {}
        linked = set()
        for slot in _objects(node.get("inputs") or [], f"node {node_id} inputs"):
            if slot.get("link") is None:
                continue
            source_id, source_slot = origin(slot.get("link"))
            if slot.get("widget") and by_id.get(source_id, {}).get("type") == _PRIMITIVE:
                continue  # the PrimitiveNode's value is the widget's own (it keeps them equal)
            inputs[str(slot.get("name"))] = [source_id, source_slot]
            linked.add(str(slot.get("name")))
        if class_type in WIDGETS:
            inputs.update(
                (name, value)
                for name, value in _widget_values(node_id, class_type, node)
                if name not in linked
            )
        mode = node.get("mode", 0)
        off = _MODES.get(mode) if isinstance(mode, int) else None
        nodes[node_id] = _Node(node_id, class_type, inputs, off)
    return nodes


def _widget_values(
    node_id: str, class_type: str, node: Mapping[str, object]
) -> Iterator[tuple[str, object]]:
    names = WIDGETS[class_type]
    values = node.get("widgets_values", [])
    if isinstance(values, Mapping):  # newer frontends save some nodes' widgets by name
        values = [values.get(name) for name in names if name is not None]
        names = tuple(name for name in names if name is not None)
    if not isinstance(values, list) or len(values) != len(names):
        raise InputError(
            f"node {node_id} ({class_type}) has widget values we cannot place",
            found=str(values)[:120],
            expected=f"{len(names)} values: "
            + ", ".join(name or "control_after_generate/upload" for name in names),
            fix="save the workflow again with a current ComfyUI",
        )
    return ((name, value) for name, value in zip(names, values, strict=True) if name is not None)


def _objects(value: object, what: str) -> list[Mapping[str, object]]:
    if not isinstance(value, list) or not all(isinstance(item, Mapping) for item in value):
        raise InputError(f"the workflow's {what} are not a list of objects", found=str(value)[:120])
    return list(value)


# ---------------------------------------------------------------- following the graph


def _is_link(value: object) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
    )


class _Graph:
    def __init__(self, nodes: dict[str, _Node], *, from_ui: bool) -> None:
        self.nodes = nodes
        self.from_ui = from_ui
        self.source = "ComfyUI workflow (UI format)" if from_ui else "ComfyUI prompt (API format)"
        self.problems: list[str] = []

    def generation(self) -> Generation:
        sampler = self._checked_output()
        seed_name = "seed" if sampler.class_type == "KSampler" else "noise_seed"
        positive_text, positive_clip, positive_controls = self._conditioning(sampler, "positive")
        negative_text, negative_clip, negative_controls = self._conditioning(sampler, "negative")
        model_loras, checkpoint = self._chain(sampler, "model", 0)
        for clip, which in ((positive_clip, "positive"), (negative_clip, "negative")):
            if clip != (model_loras, checkpoint):
                self.problems.append(
                    f"the {which} prompt's CLIP comes through {_chain_words(*clip)} but the "
                    f"model through {_chain_words(model_loras, checkpoint)}; we load one "
                    "checkpoint and apply each LoRA to both"
                )
        if positive_controls != negative_controls:
            self.problems.append(
                f"the positive prompt is conditioned by ControlNets {positive_controls} and the "
                f"negative by {negative_controls}; we apply each ControlNet to both prompts "
                "(ControlNetApplyAdvanced does so)"
            )
        latent = self._input(sampler, "latent_image", ("EmptyLatentImage",))
        return Generation(
            source=self.source,
            prompt=positive_text,
            negative_prompt=negative_text,
            steps=self._value(sampler, "steps", int),
            cfg=self._value(sampler, "cfg", float),
            seed=self._value(sampler, seed_name, int),
            width=self._value(latent, "width", int),
            height=self._value(latent, "height", int),
            scheduler=self._scheduler(sampler),
            checkpoint=Checkpoint(
                name=self._value(self.nodes[checkpoint], "ckpt_name", str), hash=None
            ),
            loras=tuple(self._lora(self.nodes[node_id]) for node_id in model_loras),
            controlnets=positive_controls,
            batch_size=self._value(latent, "batch_size", int),
            problems=tuple(self.problems),
        )

    def _checked_output(self) -> _Node:
        """The sampler the output's image is decoded from, after refusing any unsupported
        (or muted, or bypassed) node reachable from the output."""
        outputs = [node for node in self.nodes.values() if node.class_type in _OUTPUTS]
        if not outputs:
            raise InputError(
                "the workflow has no SaveImage or PreviewImage node",
                fix="import a workflow whose image is saved by SaveImage",
            )
        reachable = self._reachable(outputs)
        unsupported = [node for node in reachable if node.class_type not in WIDGETS]
        if unsupported:
            raise InputError(
                "the workflow uses nodes we cannot import",
                found=", ".join(f"{node.class_type} (node {node.id})" for node in unsupported),
                expected="only " + ", ".join(WIDGETS),
                fix="rebuild the workflow from those nodes, or render it in ComfyUI",
            )
        if off := [node for node in reachable if node.off is not None]:
            raise InputError(
                "the workflow has muted or bypassed nodes on the way to its image",
                found=", ".join(f"{node.class_type} (node {node.id}, {node.off})" for node in off),
                fix="enable or delete them in ComfyUI and save the workflow again",
            )
        decoders = {self._input(output, "images", ("VAEDecode",)).id for output in outputs}
        if len(decoders) > 1:
            raise InputError(
                "the workflow saves images decoded by several VAEDecode nodes",
                found=", ".join(sorted(decoders)),
                fix="keep one SaveImage (or PreviewImage) and the nodes it needs",
            )
        decoder = self.nodes[decoders.pop()]
        sampler = self._input(decoder, "samples", _SAMPLERS)
        _, vae_checkpoint = self._chain(decoder, "vae", 2)
        _, model_checkpoint = self._chain(sampler, "model", 0)
        if vae_checkpoint != model_checkpoint:
            self.problems.append(
                f"the VAE comes from checkpoint node {vae_checkpoint} and the model from node "
                f"{model_checkpoint}; we decode with the model's own checkpoint"
            )
        return sampler

    def _reachable(self, outputs: Sequence[_Node]) -> list[_Node]:
        seen: dict[str, _Node] = {}
        waiting = list(outputs)
        while waiting:
            node = waiting.pop()
            if node.id in seen:
                continue
            seen[node.id] = node
            for value in node.inputs.values():
                if _is_link(value):
                    assert isinstance(value, list)  # _is_link checked it
                    waiting.append(self._node(value[0], node))
        return sorted(seen.values(), key=lambda node: (len(node.id), node.id))

    def _node(self, node_id: str, user: _Node) -> _Node:
        if node_id not in self.nodes:
            raise InputError(
                f"node {user.id} ({user.class_type}) is linked to node {node_id!r}, which the "
                "workflow lacks",
                fix="save the workflow again from ComfyUI",
            )
        return self.nodes[node_id]

    def _link(self, node: _Node, name: str) -> tuple[_Node, int]:
        value = node.inputs.get(name)
        if not _is_link(value):
            raise InputError(
                f"node {node.id} ({node.class_type}) has no link for its {name!r} input",
                found=str(value)[:120],
                fix="connect it in ComfyUI and save the workflow again",
            )
        assert isinstance(value, list)  # _is_link checked it
        return self._node(value[0], node), value[1]

    def _input(self, node: _Node, name: str, classes: tuple[str, ...]) -> _Node:
        source, _ = self._link(node, name)
        if source.class_type not in classes:
            raise _unexpected(node, name, source, classes)
        return source

    def _value(self, node: _Node, name: str, kind: type[_Value]) -> _Value:
        value = node.inputs.get(name)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise InputError(
                f"node {node.id} ({node.class_type}) input {name!r} is {value!r}",
                expected=f"a {kind.__name__}",
                fix="save the workflow again from ComfyUI",
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise InputError(f"node {node.id} ({node.class_type}) input {name!r} is {value!r}")
        return value

    def _chain(self, node: _Node, name: str, slot: int) -> tuple[tuple[str, ...], str]:
        """The LoraLoader node ids (checkpoint first) between ``node``'s input and the
        CheckpointLoaderSimple it comes from (its output ``slot``: 0 model, 1 CLIP, 2 VAE),
        and that checkpoint's node id."""
        source, _ = self._link(node, name)
        through = {0: "model", 1: "clip"}.get(slot)  # a LoraLoader passes these two on
        loras: list[str] = []
        while source.class_type == "LoraLoader" and through is not None:
            loras.append(source.id)
            source, _ = self._link(source, through)
        if source.class_type != "CheckpointLoaderSimple":
            raise _unexpected(
                self.nodes[loras[-1]] if loras else node,
                through if loras and through else name,
                source,
                ("CheckpointLoaderSimple", "LoraLoader")
                if through
                else ("CheckpointLoaderSimple",),
            )
        return tuple(reversed(loras)), source.id

    def _lora(self, node: _Node) -> Lora:
        name = self._value(node, "lora_name", str)
        strength_model = self._value(node, "strength_model", float)
        strength_clip = self._value(node, "strength_clip", float)
        if strength_clip != strength_model:
            self.problems.append(
                f"LoRA {name!r} (node {node.id}): strength_clip {strength_clip:g} differs from "
                f"strength_model {strength_model:g}; we give a LoRA one weight for the model "
                f"and the text encoder (read as {strength_model:g})"
            )
        return Lora(name=name, weight=strength_model, hash=None)

    def _conditioning(
        self, sampler: _Node, name: str
    ) -> tuple[str, tuple[tuple[str, ...], str], tuple[ControlNet, ...]]:
        """A sampler's positive or negative prompt: its text, the LoRA chain and checkpoint
        its CLIP comes through, and the ControlNets applied to it (innermost first)."""
        source, slot = self._link(sampler, name)
        controls: list[ControlNet] = []
        while source.class_type in ("ControlNetApply", "ControlNetApplyAdvanced"):
            controls.append(self._control(source))
            if source.class_type == "ControlNetApply":
                source, slot = self._link(source, "conditioning")
            else:
                source, slot = self._link(source, "positive" if slot == 0 else "negative")
        if source.class_type != "CLIPTextEncode":
            raise _unexpected(
                sampler,
                name,
                source,
                ("CLIPTextEncode", "ControlNetApply", "ControlNetApplyAdvanced"),
            )
        text = self._value(source, "text", str)
        if self.from_ui and _DYNAMIC_PROMPT.search(text):
            self.problems.append(
                f"the {name} text of node {source.id} holds a dynamic prompt ({{a|b}}), which "
                "ComfyUI resolves at random when it queues; import the image's API prompt "
                "(its 'prompt' chunk) for the text that ran"
            )
        return text, self._chain(source, "clip", 1), tuple(reversed(controls))

    def _control(self, node: _Node) -> ControlNet:
        advanced = node.class_type == "ControlNetApplyAdvanced"
        return ControlNet(
            model=self._value(
                self._input(node, "control_net", ("ControlNetLoader",)), "control_net_name", str
            ),
            image=self._value(self._input(node, "image", ("LoadImage",)), "image", str),
            strength=self._value(node, "strength", float),
            start=self._value(node, "start_percent", float) if advanced else 0.0,
            end=self._value(node, "end_percent", float) if advanced else 1.0,
        )

    def _scheduler(self, sampler: _Node) -> str | None:
        sampler_name = self._value(sampler, "sampler_name", str)
        schedule = self._value(sampler, "scheduler", str)
        ours = (
            scheduler_for(COMFY_SAMPLERS[sampler_name], COMFY_SCHEDULES[schedule])
            if sampler_name in COMFY_SAMPLERS and schedule in COMFY_SCHEDULES
            else None
        )
        if ours is None:
            self.problems.append(
                f"sampler_name {sampler_name!r} with scheduler {schedule!r} (node {sampler.id}) "
                f"is not one we can render; we support {SUPPORTED_COMFY_SAMPLERS}"
            )
        if sampler.class_type == "KSampler":
            denoise = self._value(sampler, "denoise", float)
            if denoise != 1:
                self.problems.append(
                    f"KSampler (node {sampler.id}) denoise {denoise:g} over an empty latent; "
                    "we render text-to-image with the full denoise (1)"
                )
        else:
            self._advanced_as_plain(sampler)
        return ours

    def _advanced_as_plain(self, sampler: _Node) -> None:
        """KSamplerAdvanced set to run like KSampler: noise added, every step, nothing left."""
        steps = self._value(sampler, "steps", int)
        settings = {
            "add_noise": (self._value(sampler, "add_noise", str) == "enable", "enable"),
            "start_at_step": (self._value(sampler, "start_at_step", int) == 0, "0"),
            "end_at_step": (self._value(sampler, "end_at_step", int) >= steps, f">= {steps}"),
            "return_with_leftover_noise": (
                self._value(sampler, "return_with_leftover_noise", str) == "disable",
                "disable",
            ),
        }
        self.problems += [
            f"KSamplerAdvanced (node {sampler.id}) {name} {sampler.inputs.get(name)!r}: we "
            f"render every step of one pass ({name} {wanted})"
            for name, (plain, wanted) in settings.items()
            if not plain
        ]


def _unexpected(node: _Node, name: str, source: _Node, classes: tuple[str, ...]) -> InputError:
    return InputError(
        f"node {node.id} ({node.class_type}) takes its {name!r} from node {source.id} "
        f"({source.class_type})",
        expected=" or ".join(classes),
        fix="import a plain text-to-image workflow (the nodes this module's docstring lists)",
    )


def _chain_words(loras: tuple[str, ...], checkpoint: str) -> str:
    through = f"LoraLoader nodes {', '.join(loras)} of " if loras else ""
    return f"{through}checkpoint node {checkpoint}"
