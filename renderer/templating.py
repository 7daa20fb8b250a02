"""The one Jinja environment for prompts, output names and texts: sandboxed, StrictUndefined.

Templates come from YAML files a studio shares, so they are untrusted: the sandbox stops
attribute tricks (``x.__class__``), StrictUndefined turns a misspelt name into an error
instead of an empty string. ``Templates`` compiles a file's templates once and renders
them per variant, remembering a rendering by the values its template reads.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jinja2
import jinja2.meta
import jinja2.runtime
from jinja2.sandbox import SandboxedEnvironment

from .errors import InputError, TemplateError
from .yamlsource import KeyPath, YamlDocument


@functools.cache
def template_environment() -> SandboxedEnvironment:
    return SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)


def compile_template(document: YamlDocument, key_path: KeyPath, text: str) -> jinja2.Template:
    """Compile ``text`` found at ``key_path`` of ``document``; syntax errors name the line."""
    try:
        return template_environment().from_string(text)
    except jinja2.TemplateSyntaxError as err:
        raise _syntax_error(document, key_path, text, err) from None


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
        try:
            # Template.render() walks a ChainMap of the globals on every call; this is the same
            # rendering with the globals as a plain dict (it dominated 100k-variant plans).
            frame = jinja2.runtime.new_context(template.environment, template.name,
                                               template.blocks, dict(context), shared=True,
                                               globals=self.globals)
            return template.environment.concat(template.root_render_func(frame)).strip()
        except jinja2.UndefinedError as err:
            problem, fix = f"undefined name in template: {err.message}", (
                f"use one of the names templates can read: {', '.join(sorted(context))}")
        except jinja2.exceptions.SecurityError as err:
            problem, fix = f"template blocked by the sandbox: {err}", (
                "templates may only read values; remove the attribute or call")
        except (TypeError, ValueError, ArithmeticError) as err:
            problem, fix = f"template failed: {err}", "check the expression's types"
        raise self.documents[key].error(TemplateError, problem, key, fix=fix)
