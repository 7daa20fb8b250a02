"""The one Jinja environment for prompts and output names: sandboxed, StrictUndefined.

Templates come from YAML files a studio shares, so they are untrusted: the sandbox stops
attribute tricks (``x.__class__``), StrictUndefined turns a misspelt name into an error
instead of an empty string.
"""

from __future__ import annotations

import functools

import jinja2
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
