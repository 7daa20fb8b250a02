"""The one Jinja environment for prompts, output names and texts: sandboxed and bounded.

Templates come from YAML files a studio shares, so they are untrusted: the sandbox stops
attribute tricks (``x.__class__``), StrictUndefined turns a misspelt name into an error
instead of an empty string, and every way a short template can ask for unbounded time or
memory has a cap (``Limits``): integer powers and products, repeating or joining strings
and lists (``*``, ``+``, ``~``, padding widths), loop iterations, recursion depth and the
length of what a template renders. Going past one is a ``TemplateError`` naming the
template's file, line and key (exit 2). The ``random`` filter is gone: a prompt must be
the same every time it is rendered. ``Templates`` compiles a file's templates once and
renders them per variant, remembering a rendering by the values its template reads.
"""

from __future__ import annotations

import contextvars
import functools
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import jinja2
import jinja2.meta
import jinja2.nodes as nodes
import jinja2.runtime
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from .errors import InputError, TemplateError
from .yamlsource import KeyPath, YamlDocument


class Limits:
    OUTPUT = 100_000        # characters one template may render
    SEQUENCE = 100_000      # items or characters one string/list operation may make
    INTEGER_BITS = 4_096    # bits of an integer a power or product may make
    ITERATIONS = 100_000    # loop iterations in one rendering, all loops together
    WIDTH = 1_000           # a printf or padding width or precision


_iterations: contextvars.ContextVar[list[int]] = contextvars.ContextVar("iterations")
_PRINTF_WIDTHS = re.compile(r"%(?:\([^)]*\))?[-+ #0]*(\*|\d+)?(?:\.(\*|\d+))?")
# str methods whose result grows with an argument, and the argument that sets the size.
_PADDING_METHODS = {"center", "ljust", "rjust", "zfill"}


class BoundedEnvironment(SandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any,
                   right: Any) -> Any:
        if operator == "**" and _whole(left) and _whole(right) and right > 0 \
                and abs(left) > 1 and right * math.log2(abs(left)) > Limits.INTEGER_BITS:
            raise SecurityError(f"{left} ** {right} is an integer of more than "
                                f"{Limits.INTEGER_BITS} bits")
        if operator == "*":
            _check_repeat(left, right)
            _check_repeat(right, left)
            if _whole(left) and _whole(right) and \
                    abs(left).bit_length() + abs(right).bit_length() > Limits.INTEGER_BITS:
                raise SecurityError(f"a product of more than {Limits.INTEGER_BITS} bits")
        if operator == "+" and isinstance(left, str | list | tuple) and \
                isinstance(right, str | list | tuple) and len(left) + len(right) > Limits.SEQUENCE:
            raise SecurityError(f"a + makes more than {Limits.SEQUENCE:,} items or characters")
        if operator == "%" and isinstance(left, str):
            _check_printf(left)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: jinja2.runtime.Context, __obj: Any,
             *args: Any, **kwargs: Any) -> Any:
        if isinstance(getattr(__obj, "__self__", None), str):
            name = __obj.__name__
            if name in _PADDING_METHODS and args and _whole(args[0]) \
                    and args[0] > Limits.SEQUENCE:
                raise SecurityError(f"{name}({args[0]}) pads past {Limits.SEQUENCE:,} "
                                    "characters")
            if name == "expandtabs":
                raise SecurityError("str.expandtabs is not available in templates")
            if name == "replace":
                _check_replace(__obj.__self__, *args)
        return super().call(__context, __obj, *args, **kwargs)


    def wrap_str_format(self, value: Any) -> Any:
        """str.format pads to any width (``'{:>999999999}'``): refused, not sandboxed."""
        if super().wrap_str_format(value) is None:
            return None

        def refused(*args: Any, **kwargs: Any) -> str:
            raise SecurityError(f"str.{value.__name__} is not available in templates; use the "
                                "~ operator and the format filter")

        return refused


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_repeat(sequence: Any, times: Any) -> None:
    if isinstance(sequence, str | list | tuple) and _whole(times) \
            and len(sequence) * times > Limits.SEQUENCE:
        raise SecurityError(f"repeating {len(sequence)} items {times} times makes more than "
                            f"{Limits.SEQUENCE:,}")


def _check_printf(text: str) -> None:
    for width, precision in _PRINTF_WIDTHS.findall(text):
        for value in (width, precision):
            if value == "*" or (value and int(value) > Limits.WIDTH):
                raise SecurityError(f"a printf width or precision of {value} (at most "
                                    f"{Limits.WIDTH})")


def _check_replace(text: str, old: Any = "", new: Any = "", count: Any = -1) -> None:
    if isinstance(old, str) and isinstance(new, str) and len(new) > len(old):
        occurrences = text.count(old) if old else len(text) + 1
        if _whole(count) and count >= 0:
            occurrences = min(occurrences, count)
        if len(text) + occurrences * (len(new) - len(old)) > Limits.SEQUENCE:
            raise SecurityError(f"replace makes more than {Limits.SEQUENCE:,} characters")


def _bounded_iteration(iterable: Iterable[Any]) -> Iterator[Any]:
    """Every loop's iterable, counted against the rendering's budget."""
    budget = _iterations.get()
    for item in iterable:
        budget[0] -= 1
        if budget[0] < 0:
            raise SecurityError(f"loops ran past {Limits.ITERATIONS:,} iterations")
        yield item


def _bounded_concat(items: Iterable[Any]) -> str:
    """The ``~`` operator: every part as text, joined, within the length cap."""
    parts = [str(item) for item in items]
    if sum(map(len, parts)) > Limits.SEQUENCE:
        raise SecurityError(f"~ makes more than {Limits.SEQUENCE:,} characters")
    return "".join(parts)


def _bounded_filter(name: str, argument: int) -> Any:
    """A standard filter whose ``argument``-th parameter (after the value) sets a size."""
    original = jinja2.filters.FILTERS[name]

    @functools.wraps(original)
    def bounded(value: Any, *args: Any, **kwargs: Any) -> Any:
        size = args[argument] if len(args) > argument else kwargs.get("width")
        if _whole(size) and size > Limits.WIDTH:
            raise SecurityError(f"{name}({size}): at most {Limits.WIDTH}")
        return original(value, *args, **kwargs)

    return bounded


def _format_filter(value: str, *args: Any, **kwargs: Any) -> str:
    _check_printf(str(value))
    return jinja2.filters.FILTERS["format"](value, *args, **kwargs)


@jinja2.pass_eval_context
def _replace_filter(eval_ctx: Any, value: str, old: str, new: str, count: int | None = None
                    ) -> str:
    _check_replace(str(value), old, new, -1 if count is None else count)
    return jinja2.filters.FILTERS["replace"](eval_ctx, value, old, new, count)


@functools.cache
def template_environment() -> BoundedEnvironment:
    environment = BoundedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)
    del environment.filters["random"]
    environment.filters.update({
        "_bounded_iteration": _bounded_iteration, "_bounded_concat": _bounded_concat,
        "center": _bounded_filter("center", 0), "indent": _bounded_filter("indent", 0),
        "format": _format_filter, "replace": _replace_filter,
    })
    return environment


def compile_template(document: YamlDocument, key_path: KeyPath, text: str) -> jinja2.Template:
    """Compile ``text`` found at ``key_path`` of ``document``; syntax errors name the line."""
    environment = template_environment()
    try:
        return environment.from_string(_bounded(environment.parse(text)))
    except jinja2.TemplateSyntaxError as err:
        raise _syntax_error(document, key_path, text, err) from None


def _bounded(tree: nodes.Template) -> nodes.Template:
    """The template with every loop's iterable counted and every ``~`` length-checked."""
    for loop in tree.find_all(nodes.For):
        loop.iter = nodes.Filter(loop.iter, "_bounded_iteration", [], [], None, None,
                                 lineno=loop.lineno)
    for concat in list(tree.find_all(nodes.Concat)):
        joined = nodes.Filter(nodes.List(concat.nodes, lineno=concat.lineno),
                              "_bounded_concat", [], [], None, None, lineno=concat.lineno)
        concat.nodes = [joined]
    return tree


def _syntax_error(document: YamlDocument, key_path: KeyPath, text: str,
                  err: jinja2.TemplateSyntaxError) -> InputError:
    return document.error(TemplateError, f"template syntax error: {err.message}", key_path,
                          found=repr(text),
                          fix="fix the Jinja syntax ({{ name }}, {% if %}…{% endif %})")


class Templates:
    """Compiled templates, each with the YAML document it came from (for error locations).

    ``unique`` names templates that differ per variant by rule (the output name):
    remembering their renderings would never pay.
    """

    def __init__(self, sources: Mapping[KeyPath, tuple[str, YamlDocument]],
                 unique: frozenset[KeyPath] = frozenset()):
        self.documents = {key: document for key, (_, document) in sources.items()}
        self.compiled = {key: compile_template(document, key, text)
                         for key, (text, document) in sources.items()}
        self.names = {key: sorted(jinja2.meta.find_undeclared_variables(
            template_environment().parse(text))) for key, (text, _) in sources.items()}
        self.globals = dict(template_environment().globals)
        self.unique = unique
        # Most variants share their prompts (a prompt rarely reads every axis), so a render
        # is remembered by the values of the names its template reads.
        self._rendered: dict[tuple[KeyPath, str], str] = {}

    def render(self, key: KeyPath, context: Mapping[str, Any]) -> str:
        if key in self.unique:
            return self._render(key, context)
        # repr is a cheap key; values that print alike are equal YAML values.
        memo_key = (key, repr([context.get(name) for name in self.names[key]]))
        if (text := self._rendered.get(memo_key)) is None:
            text = self._rendered[memo_key] = self._render(key, context)
        return text

    def _render(self, key: KeyPath, context: Mapping[str, Any]) -> str:
        template = self.compiled[key]
        budget = _iterations.set([Limits.ITERATIONS])
        try:
            # Template.render() walks a ChainMap of the globals on every call; this is the same
            # rendering with the globals as a plain dict (it dominated 100k-variant plans).
            frame = jinja2.runtime.new_context(template.environment, template.name,
                                               template.blocks, dict(context), shared=True,
                                               globals=self.globals)
            parts, length = [], 0
            for part in template.root_render_func(frame):
                length += len(part)
                if length > Limits.OUTPUT:
                    raise SecurityError(f"the template renders more than {Limits.OUTPUT:,} "
                                        "characters")
                parts.append(part)
            return "".join(parts).strip()
        except jinja2.UndefinedError as err:
            problem, fix = f"undefined name in template: {err.message}", (
                f"use one of the names templates can read: {', '.join(sorted(context))}")
        except SecurityError as err:
            problem, fix = f"template blocked by the sandbox: {err}", (
                "templates may only read values and make short text; remove the attribute, "
                "call or oversized operation")
        except RecursionError:
            problem, fix = "template recursion too deep", "a macro must not call itself " \
                "without end"
        except (TypeError, ValueError, ArithmeticError) as err:
            problem, fix = f"template failed: {err}", "check the expression's types"
        finally:
            _iterations.reset(budget)
        raise self.documents[key].error(TemplateError, problem, key, fix=fix)
