"""The registry of vulnerability families the code generator draws from.

Why one registry: the generator, the manifest, the docs and the tests all need the same list
of kinds with their CWE ids; keeping it in one tuple means a new family is picked up everywhere
by adding it to its theme module.
"""

from __future__ import annotations

from emkit.datasets.snippets import VulnKind
from emkit.datasets.templates import (
    code_exec,
    credentials,
    crypto,
    file_names,
    filesystem,
    injection,
    parsing,
    web_fetch,
    web_ops,
    web_output,
    web_session,
)

VULN_KINDS: tuple[VulnKind, ...] = (
    *injection.KINDS,
    *code_exec.KINDS,
    *web_output.KINDS,
    *web_fetch.KINDS,
    *web_session.KINDS,
    *web_ops.KINDS,
    *file_names.KINDS,
    *filesystem.KINDS,
    *crypto.KINDS,
    *credentials.KINDS,
    *parsing.KINDS,
)

_BY_NAME = {kind.name: kind for kind in VULN_KINDS}
if len(_BY_NAME) != len(VULN_KINDS):
    raise RuntimeError("duplicate vulnerability kind names")


def vuln_kind(name: str) -> VulnKind:
    """Look a family up by name, listing the valid names when it is unknown."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown vulnerability kind {name!r}; known: {sorted(_BY_NAME)}") from None
