"""The merge maths, through the real engine (run_merge -> mergekit), against numbers computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from tunesmith.merge import MergeRecipe, slerp_recipe

Q0 = "model.layers.0.self_attn.q_proj.weight"  # 64x64
K0 = "model.layers.0.self_attn.k_proj.weight"  # 32x64
NORM0 = "model.layers.0.input_layernorm.weight"  # 64 ones in the tiny model


def tensors(result) -> dict[str, torch.Tensor]:
    return load_file(str(result.model_dir / "model.safetensors"))


def basis(shape, *entries: tuple[int, float]) -> torch.Tensor:
    """A tensor of zeros with value v at flat index i for each (i, v): SLERP treats a tensor as one
    flat vector, so these are vectors we can draw."""
    t = torch.zeros(shape).reshape(-1)
    for i, v in entries:
        t[i] = v
    return t.reshape(shape)


@pytest.fixture(scope="module")
def slerp_pair(make_variant):
    """Q0 is e0 in A and e1 in B (orthogonal unit vectors). K0 is e0 in A and e0 + 0.02·e1 in B: 0.02 rad
    apart, cos = 0.9998 > mergekit's 0.9995 threshold, so SLERP falls back to linear interpolation."""

    def setting(q, k):
        def edit(t):
            t[Q0], t[K0] = basis(t[Q0].shape, *q), basis(t[K0].shape, *k)

        return edit

    return (make_variant("slerp-a", edit=setting([(0, 1.0)], [(0, 1.0)])), make_variant("slerp-b", seed=1, edit=setting([(1, 1.0)], [(0, 1.0), (1, 0.02)])))


@pytest.mark.parametrize("t, expected", [(0.0, (1.0, 0.0)), (0.5, (1 / math.sqrt(2), 1 / math.sqrt(2))), (1.0, (0.0, 1.0))])
def test_slerp_of_orthogonal_unit_vectors(slerp_pair, merge, tmp_path, t, expected):
    q = tensors(merge(slerp_recipe(*slerp_pair, t), tmp_path / "out"))[Q0].reshape(-1)
    # on the arc: (cos(t·90°), sin(t·90°)), still unit length (a linear mix would give length 0.707 at t=0.5)
    assert q[:2].tolist() == pytest.approx(expected, abs=1e-6)
    assert q[2:].abs().max() < 1e-6


def test_slerp_falls_back_to_linear_for_nearly_parallel_tensors(slerp_pair, merge, out):
    k = tensors(merge(slerp_recipe(*slerp_pair, 0.5), out))[K0].reshape(-1)
    assert k[:2].tolist() == pytest.approx([1.0, 0.01], abs=1e-6)  # (a + b) / 2
    theta = math.atan(0.02)  # SLERP proper would give sin(θ/2)/sin(θ) · (a + b) = (1.000025, 0.0100003)
    assert abs(k[0].item() - math.sin(theta / 2) / math.sin(theta) * 2) > 1e-5


def test_slerp_gradient_t_per_layer_and_module(make_model, make_variant, merge, out):
    """mergekit's example: attention t = [0, 0.5, 0.3, 0.7, 1], MLP the reverse, others 0.5. Over 5 layers
    layer i sits at i/4 along the list, so layer i gets the list's i-th value. A q_proj and an up_proj
    in every layer (and the embedding) are e0 in A and e1 in B, so the merged tensor is
    (cos(t·90°), sin(t·90°), 0, ...) and its angle gives back the t that tensor got."""
    deep = make_model("deep", num_hidden_layers=5)
    names = [f"model.layers.{i}.{m}" for i in range(5) for m in ("self_attn.q_proj.weight", "mlp.up_proj.weight")]

    def unit(i):
        def edit(t):
            for name in [*names, "model.embed_tokens.weight"]:
                t[name] = basis(t[name].shape, (i, 1.0))

        return edit

    a, b = make_variant("deep-a", base=deep, edit=unit(0)), make_variant("deep-b", base=deep, seed=1, edit=unit(1))
    merged = tensors(merge(slerp_recipe(a, b, 0.5, attn_t=[0, 0.5, 0.3, 0.7, 1], mlp_t=[1, 0.5, 0.7, 0.3, 0]), out))
    t_of = lambda name: math.atan2(merged[name].reshape(-1)[1], merged[name].reshape(-1)[0]) / (math.pi / 2)  # noqa: E731
    assert [t_of(f"model.layers.{i}.self_attn.q_proj.weight") for i in range(5)] == pytest.approx([0, 0.5, 0.3, 0.7, 1], abs=1e-5)
    assert [t_of(f"model.layers.{i}.mlp.up_proj.weight") for i in range(5)] == pytest.approx([1, 0.5, 0.7, 0.3, 0], abs=1e-5)
    assert t_of("model.embed_tokens.weight") == pytest.approx(0.5, abs=1e-5)


def test_ties_trims_elects_sign_by_mass_and_takes_the_disjoint_mean(tiny_model_dir, make_variant, merge, out):
    """Deltas on the first 4 of NORM0's 64 entries (the rest 0), weights 1, 1, 0.5, density 0.05:
    each model keeps its int(0.05·64) = 3 largest |delta|.
                 delta                     kept (3 largest)          x weight
        B  [ 0.9, -0.2,  0.1, 0.4]   [ 0.9, -0.2,  0  , 0.4]   [ 0.9, -0.2,  0  , 0.4 ]
        C  [-0.3,  0.5, -0.6, 0.05]  [-0.3,  0.5, -0.6, 0  ]   [-0.3,  0.5, -0.6, 0   ]
        D  [-0.4,  0.3,  0.8, 0.7]   [-0.4,  0  ,  0.8, 0.7]   [-0.2,  0  ,  0.4, 0.35]
    sign by weighted mass: [+0.4, +0.3, -0.2, +0.75] -> [+, +, -, +]
        entry 0: + although two of three inputs are negative (mass, not count)
        entry 2: - although D's raw +0.8 is the largest (its weight halves it)
    disjoint mean (sum of agreeing weighted deltas / sum of their weights):
        [0.9/1, 0.5/1, -0.6/1, (0.4 + 0.35)/(1 + 0.5)] = [0.9, 0.5, -0.6, 0.5]"""

    def with_delta(delta):
        def edit(t):
            t[NORM0][:4] += torch.tensor(delta)

        return edit

    models = {
        name: make_variant(f"ties-{name}", edit=with_delta(delta))
        for name, delta in (("b", [0.9, -0.2, 0.1, 0.4]), ("c", [-0.3, 0.5, -0.6, 0.05]), ("d", [-0.4, 0.3, 0.8, 0.7]))
    }
    recipe = MergeRecipe(
        {
            "merge_method": "ties",
            "base_model": tiny_model_dir,
            "dtype": "float32",
            "models": [{"model": models[n], "parameters": {"weight": w, "density": 0.05}} for n, w in (("b", 1), ("c", 1), ("d", 0.5))],
        }
    )
    merged = tensors(merge(recipe, out))
    base = load_file(f"{tiny_model_dir}/model.safetensors")
    delta = merged[NORM0] - base[NORM0]
    assert delta[:4].tolist() == pytest.approx([0.9, 0.5, -0.6, 0.5], abs=1e-6)
    assert delta[4:].abs().max() == 0
    assert all(torch.equal(merged[k], base[k]) for k in base if k != NORM0)  # zero deltas stay zero


def test_dare_keeps_a_fraction_density_and_rescales_to_keep_the_mean(tiny_model_dir, make_variant, merge, out):
    """DARE on the 49152x64 embedding (3.1M entries), delta U(0.005, 0.015), density p = 0.3.
    Kept fraction: p ± 0.002 (binomial std: sqrt(p(1-p)/n) = 0.00026). mergekit rescales the kept
    entries by |delta|_1 / |kept|_1 (one factor per tensor; in expectation 1/p, the paper's factor),
    so every kept entry is its delta times the same factor, within 1% of 1/p, and the delta's mean
    is preserved to 1%."""
    name = "model.embed_tokens.weight"
    # not seed 0: the merge seeds torch with 0, and DARE's mask (uniform < p) would replay this very
    # uniform stream, keeping exactly the smallest deltas
    gen = torch.Generator().manual_seed(1234)
    base = load_file(f"{tiny_model_dir}/model.safetensors")
    delta = 0.005 + 0.01 * torch.rand(base[name].shape, generator=gen)

    def edit(t):
        t[name] += delta

    model = make_variant("dare-b", edit=edit)
    recipe = MergeRecipe(
        {
            "merge_method": "dare_linear",
            "base_model": tiny_model_dir,
            "dtype": "float32",
            "models": [{"model": model, "parameters": {"weight": 1.0, "density": 0.3}}],
        }
    )
    merged = tensors(merge(recipe, out))[name] - base[name]
    original = load_file(f"{model}/model.safetensors")[name] - base[name]  # the delta as stored (fp32 rounding)
    kept = merged.abs() > 1e-4
    assert kept.float().mean().item() == pytest.approx(0.3, abs=0.002)
    scale = merged[kept] / original[kept]
    assert scale.max() - scale.min() < 1e-3 * scale.mean()  # one factor for the whole tensor
    assert scale.mean().item() == pytest.approx(1 / 0.3, rel=0.01)
    assert merged.mean().item() == pytest.approx(original.mean().item(), rel=0.01)


def test_dare_is_repeatable_with_a_seed(small_variants, merge, tmp_path):
    v = small_variants
    recipe = MergeRecipe(
        {
            "merge_method": "dare_ties",
            "base_model": v["base"],
            "dtype": "float32",
            "models": [{"model": v[m], "parameters": {"weight": 0.5, "density": 0.5}} for m in ("b", "c")],
        }
    )
    first, again, other = (tensors(merge(recipe, tmp_path / str(i), seed=seed)) for i, seed in enumerate((0, 0, 1)))
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first[Q0], other[Q0])


# One row per mergekit method that runs on the tiny models: a new method is one row here.
METHOD_CASES = {
    "linear": dict(models=[("b", {"weight": 0.5}), ("c", {"weight": 0.5})]),
    "slerp": dict(base=True, models=[("base", {}), ("b", {})], parameters={"t": 0.5}),
    "nuslerp": dict(models=[("b", {"weight": 0.5}), ("c", {"weight": 0.5})]),
    "multislerp": dict(base=True, models=[("b", {"weight": 0.5}), ("c", {"weight": 0.5})]),
    "karcher": dict(models=[("b", {}), ("c", {})]),
    "task_arithmetic": dict(base=True, models=[("b", {"weight": 0.5}), ("c", {"weight": 0.5})]),
    "ties": dict(base=True, models=[("b", {"weight": 0.5, "density": 0.5}), ("c", {"weight": 0.5, "density": 0.5})]),
    "dare_ties": dict(base=True, models=[("b", {"weight": 0.5, "density": 0.5}), ("c", {"weight": 0.5, "density": 0.5})]),
    "dare_linear": dict(base=True, models=[("b", {"weight": 0.5, "density": 0.5}), ("c", {"weight": 0.5, "density": 0.5})]),
    "breadcrumbs": dict(base=True, models=[("b", {"weight": 0.5, "density": 0.8}), ("c", {"weight": 0.5, "density": 0.8})]),
    "della": dict(base=True, models=[("b", {"weight": 0.5, "density": 0.5}), ("c", {"weight": 0.5, "density": 0.5})]),
    "model_stock": dict(base=True, models=[("b", {}), ("c", {})]),
    "sce": dict(base=True, models=[("b", {}), ("c", {})]),
    "nearswap": dict(base=True, models=[("base", {}), ("b", {})], parameters={"t": 0.001}),
    "arcee_fusion": dict(base=True, models=[("base", {}), ("b", {})]),
    "passthrough": dict(slices=[("b", [0, 1]), ("c", [1, 2])]),  # a frankenmerge: layer 0 of b, layer 1 of c
}


@pytest.mark.parametrize("method", list(METHOD_CASES))
def test_method_runs_on_the_tiny_models(method, small_variants, merge, out):
    from tunesmith.models import load_model

    case = METHOD_CASES[method]
    path = small_variants
    data = {"merge_method": method, "dtype": "float32"}
    if case.get("base"):
        data["base_model"] = path["base"]
    if "slices" in case:
        data["slices"] = [{"sources": [{"model": path[m], "layer_range": r}]} for m, r in case["slices"]]
    else:
        data["models"] = [{"model": path[m], **({"parameters": p} if p else {})} for m, p in case["models"]]
    if case.get("parameters"):
        data["parameters"] = case["parameters"]
    result = merge(MergeRecipe(data), out)
    assert result.path == "full"
    model = load_model(str(result.model_dir))
    logits = model(torch.tensor([[1, 2, 3]])).logits
    assert logits.shape == (1, 3, model.config.vocab_size) and torch.isfinite(logits).all()
