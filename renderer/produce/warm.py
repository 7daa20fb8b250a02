"""Models kept loaded between runs in one process: the render service's runner
(``campaign serve``), which runs job after job and would otherwise load every pipeline and
CLIP again for each.

Off unless ``keep_models_warm`` turned it on; a ``campaign`` command run on its own never
does. On, a run's ``Worker`` takes its renderer from here, keyed like
``render.keep_pipelines`` keeps pipelines within a run: by the render options, whether
pickles may load, and the checkpoints of the campaign's recipes (and, compiled, the recipes
themselves, whose LoRA hot-swap slots the compiled denoiser was built for). Runs with the
same key share the renderer and its loaded pipelines; its LoRA stacks switch per batch as
in any run, so an image's bytes are the same warm or cold (tests/test_service.py). CLIP
scorers are kept by the model (a folder by its content hash) and batch size.

A memory bound caps what stays loaded: after each run ``trim`` measures every kept
renderer's weights and evicts the least recently used until the total fits, saying what it
evicted. The renderer in use is never evicted.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from renderer.core.hashing import hash_file
from renderer.core.terminal import Log
from renderer.render.diffusers_renderer import DiffusersRenderer
from renderer.render.options import RenderOptions
from renderer.validate.inputs import ClipChoice, Recipe

if TYPE_CHECKING:
    from postprocess.scoring import ClipScorer

GIB = 1 << 30


@dataclass
class _Kept:
    renderer: DiffusersRenderer
    what: str  # for messages: the checkpoints it holds
    used: int  # a tick: larger is more recent


@dataclass
class WarmModels:
    bound_bytes: int
    log: Log
    _renderers: dict[Hashable, _Kept] = field(default_factory=dict)
    _scorers: dict[Hashable, ClipScorer] = field(default_factory=dict)
    _ticks: itertools.count[int] = field(default_factory=itertools.count)
    _current: Hashable | None = None

    def renderer(
        self, options: RenderOptions, allow_pickle: bool, recipes: Sequence[Recipe], log: Log
    ) -> DiffusersRenderer:
        """The kept renderer for this key, else a new one kept from now on."""
        checkpoints = frozenset(recipe.checkpoint.sha256 for recipe in recipes)
        compiled = tuple(sorted(recipe.ref for recipe in recipes)) if options.compile else ()
        key = (options, allow_pickle, checkpoints, compiled)
        kept = self._renderers.get(key)
        if kept is None:
            renderer = DiffusersRenderer(
                options, allow_pickle=allow_pickle, log=log, recipes=recipes
            )
            names = ", ".join(sorted({recipe.checkpoint.path.name for recipe in recipes}))
            kept = self._renderers[key] = _Kept(renderer, names, 0)
        else:
            self.log(f"warm: pipelines of {kept.what} already loaded")
        kept.renderer.log = kept.renderer.pipelines.log = log  # this run's log
        kept.used, self._current = next(self._ticks), key
        return kept.renderer

    def scorer(
        self, clip: ClipChoice, batch_size: int, load: Callable[[], ClipScorer]
    ) -> ClipScorer:
        """The kept CLIP scorer of this model and batch size, else ``load()``'s, kept."""
        identity = hash_file(clip.folder) if clip.folder is not None else None
        key = (clip.name, clip.pretrained, identity, batch_size)
        if key not in self._scorers:
            self._scorers[key] = load()
        return self._scorers[key]

    def trim(self) -> list[str]:
        """Evict the least recently used renderers (never the one last used) until what
        stays loaded fits the bound; what was evicted, in words."""
        sizes = {
            key: kept.renderer.pipelines.loaded_bytes() for key, kept in self._renderers.items()
        }
        evicted = []
        for key, kept in sorted(self._renderers.items(), key=lambda item: item[1].used):
            if sum(sizes.values()) <= self.bound_bytes or key == self._current:
                continue
            kept.renderer.release()
            del self._renderers[key]
            evicted.append(
                f"warm: evicted the pipelines of {kept.what} ({sizes.pop(key) / GIB:.2f} GiB, "
                f"least recently used) to stay under {self.bound_bytes / GIB:.2f} GiB"
            )
        for message in evicted:
            self.log(message)
        return evicted


_WARM: list[WarmModels] = []  # at most one: this process's, once turned on


def keep_models_warm(bound_bytes: int, log: Log) -> WarmModels:
    """Turn keeping models between runs on, for the rest of this process."""
    _WARM[:] = [WarmModels(bound_bytes, log)]
    return _WARM[0]


def warm_models() -> WarmModels | None:
    return _WARM[0] if _WARM else None
