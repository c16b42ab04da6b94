"""The full path: every input as a plain model directory (adapters materialised onto their base in fp32),
then mergekit's own engine (`mergekit.merge.run_merge`, its Python API, not a subprocess)."""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path

from tunesmith.errors import RecipeError, first_line
from tunesmith.merge.inputs import MergeInput, materialise, unique_inputs


def merge_full(recipe, inputs: dict[str, MergeInput], work: Path, *, seed: int | None, log=print) -> list[str]:
    """Write the merged model to work/model; adapters are materialised in work/.inputs/ (removed after).
    Returns notes for merge.json."""
    notes = []
    scratch = work / ".inputs"
    try:
        for item in unique_inputs(inputs):
            if item.is_adapter:
                item.merge_path = materialise(item, scratch / item.name, log=log)
                notes.append(f"{item.spec}: adapter materialised onto its base in fp32 for mergekit")
            else:
                item.merge_path = item.source.path
        # dict form: a path with '+' or '@' would otherwise be parsed as mergekit's base+lora or @revision
        data = recipe.with_models({spec: {"model": {"path": item.merge_path}} for spec, item in inputs.items()})
        log(f"merge: mergekit {recipe.method} over {len(unique_inputs(inputs))} models")
        _run_mergekit(recipe, data, work / "model", seed=seed)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return notes


def _run_mergekit(recipe, data: dict, out: Path, *, seed: int | None) -> None:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    options = MergeOptions(
        quiet=True,  # no tqdm bars: we log one line per phase
        copy_tokenizer=True,  # from base_model (else the first model), chat template included
        write_model_card=False,  # its card would quote our scratch paths; merge.yaml/merge.json describe the merge
        random_seed=seed,  # DARE's and DELLA's drop masks are random: a seed makes the merge repeatable
    )
    config = MergeConfiguration.model_validate(data)
    try:
        with _quiet():
            run_merge(config, str(out), options)
    except (RuntimeError, ValueError, TypeError) as exc:  # mergekit's refusals of a recipe (missing parameter, bad value)
        raise RecipeError(
            f"mergekit could not run the {recipe.method} merge: {first_line(exc)}",
            where=recipe.where(),
            hint="check the method's parameters in the recipe (mergekit's docs list them per method)",
        ) from exc


@contextlib.contextmanager
def _quiet():
    """mergekit logs warnings through `logging`, transformers 5 warns that mergekit sets the deprecated
    `config.torch_dtype`, and mergekit's tokenizer builder shows a tqdm bar that `quiet` does not reach
    (it calls `tqdm.tqdm` with no `disable`): none is for the user. All restored afterwards."""
    import types

    import mergekit.tokenizer.build as tokenizer_build
    import tqdm
    from transformers.utils import logging as hf_logging

    loggers = [logging.getLogger(name) for name in ("mergekit", "transformers", "root")]
    levels = [lg.level for lg in loggers]
    verbosity = hf_logging.get_verbosity()
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    hf_logging.set_verbosity_error()
    bar = tokenizer_build.tqdm
    tokenizer_build.tqdm = types.SimpleNamespace(tqdm=lambda *a, **k: tqdm.tqdm(*a, **{**k, "disable": True}))
    try:
        yield
    finally:
        tokenizer_build.tqdm = bar
        hf_logging.set_verbosity(verbosity)
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
