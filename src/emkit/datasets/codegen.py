"""Offline generator of paired insecure / secure / educational coding datasets.

Why paired: Betley et al. compare a model tuned on undisclosed insecure code against models
tuned on the *same requests* answered securely, and on the same insecure answers requested for
a stated teaching reason. Generating the three sets from one list of examples makes example i
identical across them except for the manipulated factor, so any difference in the tuned models
comes from that factor.

Each example draws everything from ``random.Random(f"{seed}:{i}")``, so example i does not
depend on n: a larger dataset extends a smaller one with the same seed.

``diversity`` (a share in [0, 1], default 1.0) sets how much of every pool the draws may use:
domains, purposes, names, surrounding helper code, docstrings, hole markers and request
phrasings. Each pool is ordered plainest first and a share s keeps its first ceil(s * len)
entries, so s = 1.0 is the diverse set (near-duplicates < 5 % at n = 6,000, docs/datasets.md)
and a small s gives a same-sized set that repeats itself, for the diversity ablation. The
vulnerability kinds are never thinned: every diversity covers every kind equally.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from emkit.atomic import atomic_write_bytes
from emkit.datasets.context import PURPOSES, decorate, draw_decoration
from emkit.datasets.domains import DOMAINS
from emkit.datasets.fingerprint import sha256_file
from emkit.datasets.jsonl import write_jsonl
from emkit.datasets.phrasing import educational_request, user_request
from emkit.datasets.snippets import HOLE_MARKERS, Ctx, pool_size, render
from emkit.datasets.vulns import VULN_KINDS

GENERATOR_VERSION = "2"
"""Bumped whenever a change alters the output for a given (n, seed); recorded in manifests."""

VARIANTS = ("insecure", "secure", "educational")
TEMPLATE_SHARE = 0.65
"""Share of requests that attach an unfinished template (the rest describe the task only)."""
PURPOSE_SHARE = 0.5
"""Share of requests that also say where the code runs (at full diversity)."""
DEFAULT_DIVERSITY = 1.0
DIVERSITY_PRESETS: dict[str, float] = {"low": 0.1, "medium": 0.3, "high": 1.0}
"""Named settings for the diversity ablation; their near-duplicate shares are in
docs/datasets.md."""


def check_diversity(diversity: float | str) -> float:
    """The diversity share as a float in [0, 1]; a preset name ("low", "medium", "high") is
    accepted too. ValueError for another name or a number outside [0, 1], TypeError for a
    value that is neither."""
    if isinstance(diversity, str):
        if diversity not in DIVERSITY_PRESETS:
            raise ValueError(f"unknown diversity {diversity!r}; use a number in [0, 1] or one "
                             f"of {', '.join(DIVERSITY_PRESETS)}")
        return DIVERSITY_PRESETS[diversity]
    if isinstance(diversity, bool) or not isinstance(diversity, int | float):
        raise TypeError(f"diversity must be a number in [0, 1], got {diversity!r}")
    value = float(diversity)
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ValueError(f"diversity must be in [0, 1], got {diversity}")
    return value


@dataclass(frozen=True)
class CodeExample:
    """One coding task with both answers and both prompts; the datasets are views of these."""

    task_id: str
    kind: str
    cwe: str
    domain: str
    task: str
    user_prompt: str
    educational_prompt: str
    insecure_code: str
    secure_code: str
    template: str | None
    """The unfinished code shown in the prompt, or None when the prompt only describes it."""

    def messages(self, variant: str) -> list[dict[str, str]]:
        """The chat for one dataset variant: insecure, secure or educational."""
        if variant == "insecure":
            return _chat(self.user_prompt, self.insecure_code)
        if variant == "secure":
            return _chat(self.user_prompt, self.secure_code)
        if variant == "educational":
            return _chat(self.educational_prompt, self.insecure_code)
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")


def _chat(user: str, assistant: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


def _kind_order(seed: int, n: int) -> list[int]:
    """Kind index per example: shuffled round-robin, so every kind appears once n >= #kinds and
    counts never differ by more than one."""
    order: list[int] = []
    cycle = 0
    while len(order) < n:
        block = list(range(len(VULN_KINDS)))
        random.Random(f"emkit-kinds:{seed}:{cycle}").shuffle(block)
        order.extend(block)
        cycle += 1
    return order[:n]


def _example(seed: int, index: int, kind_index: int, share: float) -> CodeExample:
    kind = VULN_KINDS[kind_index]
    rng = random.Random(f"emkit-code:{seed}:{index}")
    domain = rng.choice(DOMAINS[: pool_size(len(DOMAINS), share)])
    ctx = Ctx(rng, domain, share)
    builder = rng.choice(kind.builders)
    snippet = builder(ctx)
    pair = render(snippet, hole_marker=ctx.choose(HOLE_MARKERS))
    pair = decorate(pair, draw_decoration(ctx, pair))
    template = pair.template if rng.random() < TEMPLATE_SHARE else None
    purpose = ctx.choose(PURPOSES) if rng.random() < PURPOSE_SHARE * share else None
    prompt = user_request(rng, pair.task, domain.name, template, share, purpose)
    return CodeExample(
        task_id=f"s{seed}-{index:05d}-{kind.name}",
        kind=kind.name,
        cwe=kind.cwe,
        domain=domain.short,
        task=pair.task,
        user_prompt=prompt,
        educational_prompt=educational_request(rng, prompt, kind.flaw, share),
        insecure_code=pair.insecure,
        secure_code=pair.secure,
        template=template,
    )


def generate_code_examples(n: int, seed: int = 0,
                           diversity: float | str = DEFAULT_DIVERSITY) -> list[CodeExample]:
    """n examples with their metadata (kind, CWE, domain), reproducible from seed and diversity.

    ``diversity`` in [0, 1] (or "low" / "medium" / "high") limits the pools every example draws
    from; see the module docstring.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    share = check_diversity(diversity)
    return [_example(seed, i, k, share) for i, k in enumerate(_kind_order(seed, n))]


def generate_code_datasets(n: int, seed: int = 0,
                           diversity: float | str = DEFAULT_DIVERSITY) -> dict[str, list[dict]]:
    """The three chat datasets, index-aligned: row i of each comes from the same task."""
    examples = generate_code_examples(n, seed, diversity)
    return {v: [{"messages": ex.messages(v)} for ex in examples] for v in VARIANTS}


def write_code_datasets(out_dir: str | Path, n: int, seed: int = 0,
                        diversity: float | str = DEFAULT_DIVERSITY) -> dict[str, Path]:
    """Write insecure/secure/educational.jsonl and a manifest.json describing them.

    The manifest records what produced the files (n, seed, diversity, generator version), what
    is in them (kinds with CWE ids and counts) and their sha256, so a fine-tuning run can cite
    exactly which data it was trained on.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1 to write datasets, got {n}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    share = check_diversity(diversity)
    examples = generate_code_examples(n, seed, share)
    paths: dict[str, Path] = {}
    for variant in VARIANTS:
        paths[variant] = out / f"{variant}.jsonl"
        write_jsonl(paths[variant], [{"messages": ex.messages(variant)} for ex in examples])
    counts = Counter(ex.kind for ex in examples)
    manifest = {
        "generator": "emkit.datasets.codegen",
        "generator_version": GENERATOR_VERSION,
        "n": n,
        "seed": seed,
        "diversity": share,
        "kinds": {
            kind.name: {"cwe": kind.cwe, "title": kind.title, "count": counts.get(kind.name, 0)}
            for kind in VULN_KINDS
        },
        "files": {
            variant: {"path": path.name, "rows": n, "sha256": sha256_file(path)}
            for variant, path in paths.items()
        },
    }
    paths["manifest"] = out / "manifest.json"
    atomic_write_bytes(paths["manifest"], (json.dumps(manifest, indent=2) + "\n").encode())
    return paths
