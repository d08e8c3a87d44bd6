"""What ``cnnbench summary`` shows: a model, one of its variants, or a study's variants."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cnnbench.model.spec import ModelSpec, SpecError, get_spec
from cnnbench.study.studyfile import find_study, is_model_spec, load_study
from cnnbench.study.variants import apply_levels, parse_factor, parse_vary, variant_name


def summary_target(name: str, vary: Sequence[str] = (), variant: str | None = None
                   ) -> tuple[ModelSpec | None, Any]:
    """What ``cnnbench summary`` shows: a model, one of its variants (``--vary``), or a
    study's variants (a study name or file: its name and a row a variant: ablation, variant,
    the name its runs are stored under, parameters, training edits, layers) and one of them
    (``--variant``)."""
    path = find_study(name)
    if path.is_file() and not is_model_spec(path):
        study = load_study(path)
        if not study.ablations:
            raise SpecError(f"{name}: a study without ablations has no variants to show; "
                            f"name one of its models instead.")
        variants = {v.name: v for a in study.ablations for v in a.variants}
        if variant is not None:
            if variant not in variants:
                import difflib
                close = difflib.get_close_matches(variant, variants, n=3)
                raise SpecError(f"{name}: no variant {variant!r}."
                                + (f" Did you mean {', '.join(close)}?" if close else "")
                                + f" Its variants: {', '.join(variants)}.")
            return variants[variant].spec, None
        from cnnbench.study.ablation import canonical_names
        stored = canonical_names(study.ablations, study.train_config_kwargs())
        rows = [(a.name, v.name, stored[(a.name, v.name)], v.spec.params,
                 ", ".join(f"{k}={x}" for k, x in v.training.items()) or "—",
                 v.spec.shorthand()) for a in study.ablations for v in a.variants]
        return None, (study.name, rows)
    base = get_spec(name)
    if not vary:
        return base, None
    # Each --vary's last level: 'summary CNN_MNIST_2 --vary activation=relu'.
    factors = [parse_factor(n, d, "--vary", min_levels=1)
               for n, d in (parse_vary(v, base) for v in vary)]
    levels = {f.name: f.labels[-1] for f in factors}
    spec, _ = apply_levels(base, factors, levels, variant_name(base.name, levels))
    return spec, None
