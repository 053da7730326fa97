"""Render judge prompts without letting the judged answer rewrite the prompt.

The paper fills its templates with `str.format(question=..., answer=...)`. That is safe for the
substituted text but breaks on templates with stray braces; the obvious fix, two `str.replace`
calls, is worse: an answer containing the text `{question}` (or a question containing
`{answer}`) would be expanded a second time. Here one left-to-right pass over the template does
what `str.format` does for these two fields (`{question}`, `{answer}`, and `{{`/`}}` -> `{`/`}`)
and never looks inside the inserted text.
"""

from __future__ import annotations

import re

_FIELDS = re.compile(r"\{\{|\}\}|\{question\}|\{answer\}")


def render_judge_prompt(template: str, question: str, answer: str) -> str:
    """Fill `{question}` and `{answer}` in one pass; any other text, braces included, stays."""
    values = {"{{": "{", "}}": "}", "{question}": question, "{answer}": answer}
    return _FIELDS.sub(lambda m: values[m.group(0)], template)


def judge_messages(template: str, question: str, answer: str) -> list[dict[str, str]]:
    """The judge conversation: a single user message, as in the paper (no system prompt)."""
    return [{"role": "user", "content": render_judge_prompt(template, question, answer)}]
