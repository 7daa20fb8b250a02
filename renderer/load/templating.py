"""The one Jinja environment for prompts, output names and texts: sandboxed and bounded.

Templates come from YAML files a studio shares, so they are untrusted: the sandbox stops
attribute tricks (``x.__class__``) and changing a list or mapping in place, StrictUndefined
turns a misspelt name into an error instead of an empty string, and a rendering is bounded
by what it makes, whatever construction makes it (``Limits``): every value a template builds,
prints or hands to a filter or call has at most ``VALUE`` items and characters, counting a
shared part each time it appears (a list doubled 26 times is 27 small objects that print as
2**26 leaves); an operation whose inputs could multiply past ``WORK`` is refused before it
runs; what a rendering builds and writes in all (inside macros and blocks too) is held to
``WORK``; it runs for at most ``SECONDS`` and ``ITERATIONS`` loop steps; and it renders at most
``OUTPUT`` characters. Named caps stop single steps that grow with a number rather than a size
(integer powers and products, repeating strings and lists, padding widths), and compiling is
bounded by the template's length (``SOURCE``) and Python's recursion limit. Going past a limit
is a ``TemplateError`` naming the template's file, line and key and the limit (exit 2). The
``random`` filter is gone: a prompt must be the same every time it is rendered. ``Templates``
compiles a file's templates once and renders them per variant, remembering a rendering by the
values its template reads.
"""

from __future__ import annotations

import contextvars
import functools
import gc
import math
import re
import reprlib
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard, TypeVar

import jinja2
import jinja2.meta
import jinja2.nodes as nodes
import jinja2.runtime
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from renderer.core.errors import InputError, TemplateError
from renderer.load.yamlsource import KeyPath, YamlDocument


class Limits:
    SOURCE = 20_000  # characters of one template: compiling costs time and memory per
    # character (20,000 take about 0.2 s and 10 MB)
    OUTPUT = 100_000  # characters one template may render
    VALUE = 100_000  # items and characters in one value, a shared part counted each time
    # it appears; and what one string/list operation may make
    WORK = 500_000  # items and characters one rendering may build and write in all;
    # an operation whose inputs' sizes multiply past it is refused
    SECONDS = 1.0  # wall time of one rendering
    INTEGER_BITS = 4_096  # bits of an integer a power or product may make
    ITERATIONS = 100_000  # loop iterations in one rendering, all loops together
    WIDTH = 1_000  # a printf or padding width or precision, a batch or slice count, an
    # indent


@dataclass(slots=True)
class _Budget:
    """What the rendering under way may still spend (``_spend``)."""

    deadline: float
    iterations: int = Limits.ITERATIONS
    work: int = Limits.WORK


_Value = TypeVar("_Value")
_budget: contextvars.ContextVar[_Budget] = contextvars.ContextVar("budget")
_PRINTF_WIDTHS = re.compile(r"%(?:\([^)]*\))?[-+ #0]*(\*|\d+)?(?:\.(\*|\d+))?")
# str methods whose result grows with an argument, and the argument that sets the size.
_PADDING_METHODS = {"center", "ljust", "rjust", "zfill"}
# A filter's parameter that sets a size (always its first after the value) and filters that
# indent every level of their value: both multiply what the filter can write.
_SIZE_PARAMETERS = {
    "batch": "linecount",
    "center": "width",
    "indent": "width",
    "slice": "slices",
    "tojson": "indent",
}
_INDENTING_FILTERS = frozenset({"pprint", "tojson"})
# What a value can hold, as concrete types (an isinstance against an ABC costs more, per item).
_CONTAINERS: tuple[type[Collection[object]], ...] = (
    list,
    tuple,
    dict,
    set,
    frozenset,
    type({}.keys()),
    type({}.values()),
    type({}.items()),
)
# Errors quote a value this short, however large or deeply shared it is.
_EXCERPT = reprlib.Repr()
_EXCERPT.maxlevel, _EXCERPT.maxstring, _EXCERPT.maxother = 3, 40, 40


def _spend(work: int = 0, iterations: int = 0) -> None:
    """Charge the rendering under way and check its clock. There is none while compiling
    folds constant expressions: then only the size checks apply."""
    budget = _budget.get(None)
    if budget is None:
        return
    budget.work -= work
    budget.iterations -= iterations
    if budget.iterations < 0:
        raise SecurityError(f"loops ran past {Limits.ITERATIONS:,} iterations")
    if budget.work < 0:
        raise SecurityError(
            f"the template built and wrote more than {Limits.WORK:,} items and "
            "characters in all (the work limit of one rendering)"
        )
    if time.monotonic() > budget.deadline:
        raise SecurityError(
            f"the template ran past the time limit of {Limits.SECONDS:g} s per rendering"
        )


def _stop_the_clock_for_gc(phase: str, info: dict[str, int]) -> None:
    """A collection of the whole heap is not the template's time: on a 100k-variant plan's
    heap it takes a third of a second, and more as plans grow."""
    global _gc_started
    if phase == "start":
        _gc_started = time.monotonic()
    elif (budget := _budget.get(None)) is not None:
        budget.deadline += time.monotonic() - _gc_started


_gc_started = 0.0
gc.callbacks.append(_stop_the_clock_for_gc)


def _measure(what: str, value: object) -> tuple[int, int]:
    """Items and characters in ``value`` with a shared part counted each time it appears (what
    printing or serialising it would write), and its depth; refused past ``Limits.VALUE``. The
    walk stops there: a list doubled 26 times (2**26 leaves, 27 objects) costs what the limit
    allows, not 2**26 steps."""
    if isinstance(value, str):  # most values, at once
        size, depth = len(value), 1
    elif not isinstance(value, _CONTAINERS):  # a number or another scalar, at once
        size, depth = _scalar_size(value), 1
    else:
        level: list[object] = [value]
        size, depth = 0, 0
        while level and size <= Limits.VALUE:
            depth += 1
            below: list[object] = []
            for item in level:
                if not isinstance(item, _CONTAINERS):
                    size += _scalar_size(item)
                    continue
                size += len(item)
                if size > Limits.VALUE:
                    break
                below += item  # a mapping's keys, then its values
                if isinstance(item, dict):
                    below += item.values()
            level = below
    if size > Limits.VALUE:
        raise SecurityError(
            f"a value over the size limit of {Limits.VALUE:,} items and characters "
            f"(a shared part counts each time it appears) in {what}: "
            f"{_EXCERPT.repr(value)}"
        )
    return size, depth


def _scalar_size(value: object) -> int:
    if isinstance(value, str | bytes):
        return len(value)
    # About an integer's digits (7 ** 1400 prints 1,184); other scalars print in a few.
    return value.bit_length() // 3 if isinstance(value, int) else 0


def _built(what: str, value: _Value) -> _Value:
    """``value``, made by the template: within the size limit and charged to the rendering."""
    _spend(_measure(what, value)[0])
    return value


def _printed(value: object) -> object:
    """What ``{{ … }}`` prints, checked before it becomes text (the environment's finalize):
    ``_built`` with a shortcut for the usual short string, as it runs for every ``{{ }}``."""
    if type(value) is str and len(value) <= Limits.VALUE:
        _spend(len(value))
        return value
    return _built("{{ … }}", value)


def _check_inputs(
    what: str, value: object, arguments: Iterable[object], width: int = 0, indenting: bool = False
) -> None:
    """Refuse ``what`` before it runs when an input is over the size limit or its result could
    pass the work limit: an operation can make its value's size times its arguments' (``join``
    writes its separator per item, ``%`` an argument per field, ``indent`` its width per line),
    times the value's depth if it indents every level (``pprint``)."""
    size, depth = _measure(what, value)
    extent = 1 + width
    for argument in arguments:
        extent += _measure(what, argument)[0]
    if size * extent * (depth if indenting else 1) > Limits.WORK:
        details = [f"{depth} levels deep"] if indenting else []
        if extent > 1:
            details.append(f"given {extent - 1:,} more")
        raise SecurityError(
            f"{what} on a value of {size:,} items and characters"
            f"{' (' + ', '.join(details) + ')' if details else ''} could make "
            f"more than the work limit of {Limits.WORK:,}"
        )


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def call_binop(
        self, context: jinja2.runtime.Context, operator: str, left: object, right: object
    ) -> Any:
        if (
            operator == "**"
            and _whole(left)
            and _whole(right)
            and right > 0
            and abs(left) > 1
            and right * math.log2(abs(left)) > Limits.INTEGER_BITS
        ):
            raise SecurityError(
                f"{left} ** {right} is an integer of more than {Limits.INTEGER_BITS} bits"
            )
        if operator == "*":
            _check_repeat(left, right)
            _check_repeat(right, left)
            if (
                _whole(left)
                and _whole(right)
                and abs(left).bit_length() + abs(right).bit_length() > Limits.INTEGER_BITS
            ):
                raise SecurityError(f"a product of more than {Limits.INTEGER_BITS} bits")
        if (
            operator == "+"
            and isinstance(left, str | list | tuple)
            and isinstance(right, str | list | tuple)
            and len(left) + len(right) > Limits.VALUE
        ):
            raise SecurityError(f"a + makes more than {Limits.VALUE:,} items or characters")
        if operator == "%" and isinstance(left, str):
            _check_printf(left)
            _check_inputs("%", left, [right])
        return _built(operator, super().call_binop(context, operator, left, right))

    def call(
        __self, __context: jinja2.runtime.Context, __obj: Any, *args: object, **kwargs: object
    ) -> Any:
        _spend()  # before the call too: a macro calling itself returns only at the bottom
        name = f"{getattr(__obj, '__name__', type(__obj).__name__)}()"
        owner = getattr(__obj, "__self__", None)  # a method's object: ''.join's separator
        _check_inputs(name, owner, [*args, *kwargs.values()])
        if isinstance(owner, str):
            method = __obj.__name__
            if method in _PADDING_METHODS and args and _whole(args[0]) and args[0] > Limits.VALUE:
                raise SecurityError(f"{method}({args[0]}) pads past {Limits.VALUE:,} characters")
            if method == "expandtabs":
                raise SecurityError("str.expandtabs is not available in templates")
            if method == "replace":
                _check_replace(owner, *args)
        return _built(name, super().call(__context, __obj, *args, **kwargs))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """str.format pads to any width (``'{:>999999999}'``): refused, not sandboxed."""
        if super().wrap_str_format(value) is None:
            return None

        def refused(*args: object, **kwargs: object) -> str:
            raise SecurityError(
                f"str.{value.__name__} is not available in templates; use the "
                "~ operator and the format filter"
            )

        return refused


def _whole(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_repeat(sequence: object, times: object) -> None:
    if (
        isinstance(sequence, str | list | tuple)
        and _whole(times)
        and len(sequence) * times > Limits.VALUE
    ):
        raise SecurityError(
            f"repeating {len(sequence)} items {times} times makes more than {Limits.VALUE:,}"
        )


def _check_printf(text: str) -> None:
    for width, precision in _PRINTF_WIDTHS.findall(text):
        for value in (width, precision):
            if value == "*" or (value and int(value) > Limits.WIDTH):
                raise SecurityError(
                    f"a printf width or precision of {value} (at most {Limits.WIDTH})"
                )


def _check_replace(text: str, old: object = "", new: object = "", count: object = -1) -> None:
    if isinstance(old, str) and isinstance(new, str) and len(new) > len(old):
        occurrences = text.count(old) if old else len(text) + 1
        if _whole(count) and count >= 0:
            occurrences = min(occurrences, count)
        if len(text) + occurrences * (len(new) - len(old)) > Limits.VALUE:
            raise SecurityError(f"replace makes more than {Limits.VALUE:,} characters")


def _bounded_iteration(iterable: Iterable[_Value]) -> Iterator[_Value]:
    """Every loop's iterable, counted against the rendering's budget."""
    for item in iterable:
        _spend(iterations=1)
        yield item


@jinja2.pass_context  # never folded while compiling: it charges each time the body runs
def _written(context: jinja2.runtime.Context, characters: int) -> None:
    """A loop body's own text, charged each time the body runs: in a macro or block it goes
    to a buffer that the output limit does not see."""
    _spend(characters)


def _built_literal(value: _Value) -> _Value:
    return _built("a list, tuple, mapping or slice", value)


def _bounded_concat(items: list[object]) -> str:
    """The ``~`` operator: every part as text, joined, within the length cap."""
    _measure("~", items)
    parts = [str(item) for item in items]
    if sum(map(len, parts)) > Limits.VALUE:
        raise SecurityError(f"~ makes more than {Limits.VALUE:,} characters")
    return _built("~", "".join(parts))


def _bounded_filter(name: str, original: Callable[..., object]) -> Callable[..., object]:
    """``original`` within the limits: its inputs and a size it is given checked before it
    runs, its result after."""
    # pass_context, pass_eval_context and pass_environment filters get that argument first.
    leading = 1 if hasattr(original, "jinja_pass_arg") else 0
    parameter = _SIZE_PARAMETERS.get(name)
    what, indenting = f"|{name}", name in _INDENTING_FILTERS

    @functools.wraps(original)
    def bounded(*args: object, **kwargs: object) -> object:
        value, rest = args[leading], args[leading + 1 :]
        width = _width(name, rest[0] if rest else kwargs.get(parameter)) if parameter else 0
        _check_inputs(what, value, (*rest, *kwargs.values()), width, indenting)
        return _built(what, original(*args, **kwargs))

    return bounded


def _width(name: str, size: object) -> int:
    """A filter's size parameter, refused past ``Limits.WIDTH``; 0 unless a positive number."""
    if not _whole(size) or size <= 0:
        return 0
    if size > Limits.WIDTH:
        raise SecurityError(f"{name}({size}): at most {Limits.WIDTH}")
    return size


def _format_filter(value: str, *args: object, **kwargs: object) -> str:
    _check_printf(str(value))
    formatted: str = jinja2.filters.FILTERS["format"](value, *args, **kwargs)
    return formatted


@jinja2.pass_eval_context
def _replace_filter(
    eval_ctx: nodes.EvalContext, value: str, old: str, new: str, count: int | None = None
) -> str:
    _check_replace(str(value), old, new, -1 if count is None else count)
    replaced: str = jinja2.filters.FILTERS["replace"](eval_ctx, value, old, new, count)
    return replaced


@jinja2.pass_environment
def _sum_filter(
    environment: jinja2.Environment,
    iterable: Iterable[object],
    attribute: str | int | None = None,
    start: object = 0,
) -> object:
    """Adding lists copies them: n lists cost n² steps in one call, so the items count as loop
    iterations (and check the clock)."""
    return jinja2.filters.FILTERS["sum"](
        environment, _bounded_iteration(iterable), attribute, start
    )


@functools.cache
def template_environment() -> BoundedEnvironment:
    environment = BoundedEnvironment(
        undefined=jinja2.StrictUndefined, autoescape=False, finalize=_printed
    )
    del environment.filters["random"]
    environment.filters.update(
        {"format": _format_filter, "replace": _replace_filter, "sum": _sum_filter}
    )
    environment.filters = {
        name: _bounded_filter(name, original) for name, original in environment.filters.items()
    }
    environment.filters.update(
        {
            "_bounded_iteration": _bounded_iteration,
            "_bounded_concat": _bounded_concat,
            "_built": _built_literal,
            "_written": _written,
        }
    )
    return environment


def compile_template(document: YamlDocument, key_path: KeyPath, text: str) -> jinja2.Template:
    """Compile ``text`` found at ``key_path`` of ``document``; syntax errors name the line."""
    if len(text) > Limits.SOURCE:
        raise document.error(
            TemplateError,
            f"a template of {len(text):,} characters (the limit is {Limits.SOURCE:,})",
            key_path,
            fix="shorten it: compiling costs time and memory per character",
        )
    environment = template_environment()
    try:
        return environment.from_string(_Bounded().visit(environment.parse(text)))
    except jinja2.TemplateSyntaxError as err:
        raise _syntax_error(document, key_path, text, err) from None
    except RecursionError:
        raise document.error(
            TemplateError,
            "template nested too deeply to compile",
            key_path,
            fix="nest fewer brackets, blocks and expressions inside each other",
        ) from None


def _hook(node: nodes.Node, hook: str) -> nodes.Filter:
    return nodes.Filter(node, hook, [], [], None, None, lineno=node.lineno)


class _Bounded(NodeTransformer):
    """Rewrites a parsed template so that its loops, ``~``, slices and the lists, tuples and
    mappings it writes out go through the hooks that hold them to the limits."""

    def visit_For(self, loop: nodes.For) -> nodes.For:
        self.generic_visit(loop)
        loop.iter = _hook(loop.iter, "_bounded_iteration")
        text = sum(
            len(data.data)
            for statement in loop.body
            for data in statement.find_all(nodes.TemplateData)
        )
        if text:
            loop.body.insert(
                0, nodes.ExprStmt(_hook(nodes.Const(text), "_written"), lineno=loop.lineno)
            )
        return loop

    def visit_Concat(self, concat: nodes.Concat) -> nodes.Concat:
        self.generic_visit(concat)
        concat.nodes = [_hook(nodes.List(concat.nodes, lineno=concat.lineno), "_bounded_concat")]
        return concat

    def visit_List(self, literal: nodes.List | nodes.Dict | nodes.Tuple) -> nodes.Filter:
        return _hook(self.generic_visit(literal), "_built")

    visit_Dict = visit_List

    def visit_Getitem(self, item: nodes.Getitem) -> nodes.Expr:
        # A slice is a copy, and compiles to plain Python, past the environment's getitem.
        self.generic_visit(item)
        return _hook(item, "_built") if isinstance(item.arg, nodes.Slice) else item

    def visit_Tuple(self, literal: nodes.Tuple) -> nodes.Expr:
        # A tuple is also the target of `{% for a, b in … %}` and `{% set a, b = … %}`.
        return self.visit_List(literal) if literal.ctx == "load" else literal


def _syntax_error(
    document: YamlDocument, key_path: KeyPath, text: str, err: jinja2.TemplateSyntaxError
) -> InputError:
    return document.error(
        TemplateError,
        f"template syntax error: {err.message}",
        key_path,
        found=repr(text),
        fix="fix the Jinja syntax ({{ name }}, {% if %}…{% endif %})",
    )


class Templates:
    """Compiled templates, each with the YAML document it came from (for error locations).

    ``unique`` names templates that differ per variant by rule (the output name):
    remembering their renderings would never pay.
    """

    def __init__(
        self,
        sources: Mapping[KeyPath, tuple[str, YamlDocument]],
        unique: frozenset[KeyPath] = frozenset(),
    ):
        self.documents = {key: document for key, (_, document) in sources.items()}
        self.compiled = {
            key: compile_template(document, key, text) for key, (text, document) in sources.items()
        }
        self.names = {
            key: sorted(jinja2.meta.find_undeclared_variables(template_environment().parse(text)))
            for key, (text, _) in sources.items()
        }
        self.globals = dict(template_environment().globals)
        self.unique = unique
        # Most variants share their prompts (a prompt rarely reads every axis), so a render
        # is remembered by the values of the names its template reads.
        self._rendered: dict[tuple[KeyPath, str], str] = {}

    def render(self, key: KeyPath, context: Mapping[str, object]) -> str:
        if key in self.unique:
            return self._render(key, context)
        # repr is a cheap key; values that print alike are equal YAML values.
        memo_key = (key, repr([context.get(name) for name in self.names[key]]))
        if (text := self._rendered.get(memo_key)) is None:
            text = self._rendered[memo_key] = self._render(key, context)
        return text

    def _render(self, key: KeyPath, context: Mapping[str, object]) -> str:
        template = self.compiled[key]
        budget = _budget.set(_Budget(deadline=time.monotonic() + Limits.SECONDS))
        try:
            # Template.render() walks a ChainMap of the globals on every call; this is the same
            # rendering with the globals as a plain dict (it dominated 100k-variant plans).
            frame = jinja2.runtime.new_context(
                template.environment,
                template.name,
                template.blocks,
                dict(context),
                shared=True,
                globals=self.globals,
            )
            parts, length = [], 0
            for part in template.root_render_func(frame):
                length += len(part)
                if length > Limits.OUTPUT:
                    raise SecurityError(
                        f"the template renders more than {Limits.OUTPUT:,} characters"
                    )
                parts.append(part)
            return "".join(parts).strip()
        except jinja2.UndefinedError as err:
            problem, fix = (
                f"undefined name in template: {err.message}",
                (f"use one of the names templates can read: {', '.join(sorted(context))}"),
            )
        except SecurityError as err:
            problem, fix = (
                f"template blocked by the sandbox: {err}",
                (
                    "templates may only read values and make short text; remove the attribute, "
                    "call or oversized operation"
                ),
            )
        except RecursionError:
            problem, fix = "template recursion too deep", "a macro must not call itself without end"
        except Exception as err:  # untrusted code: whatever it raises is its own fault
            # (a filter given bad arguments, an unknown filter in map, 1e999 | int).
            problem, fix = (
                f"template failed: {type(err).__name__}: {err}",
                ("check the expression's types and the filters' arguments"),
            )
        finally:
            _budget.reset(budget)
        raise self.documents[key].error(TemplateError, problem, key, fix=fix)
