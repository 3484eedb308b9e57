"""Pruning keeps exactly what it says: its own shape is no change, what goes is the lowest scored, and the sliced
model computes what the full model computes with the pruned parts zeroed."""

import pytest
import torch

from tinythink.compress import prune
from tinythink.compress.importance import Importance, measure
from tinythink.compress.prune import Target
from tinythink.errors import TinythinkError
from tinythink.model.config import LayerShape

from tiny_models import tiny_model


@pytest.fixture(params=["llama-tied", "qwen2-bias-untied"])
def model(request):
    if request.param == "llama-tied":
        return tiny_model().eval()
    return tiny_model(attention_bias=True, arch="qwen2", tie_embeddings=False, n_heads=6, n_kv_heads=3,
                      head_dim=8).eval()


@pytest.fixture
def importance(model, tiny_data):
    data, heldout = tiny_data
    return measure(model, data, heldout, progress=False)


def logits(model, ids):
    with torch.no_grad():
        return model(ids)


IDS = torch.tensor([[5, 17, 33, 2, 91, 40, 7, 7, 60, 12]])


def test_importance_has_a_score_for_every_part(model, importance, tmp_path):
    c = model.config
    assert [len(n) for n in importance.neurons] == [c.intermediate_size] * c.n_layers
    assert [len(h) for h in importance.heads] == [c.n_heads] * c.n_layers
    assert importance.channels.shape == (c.dim,) and (importance.channels > 0).all()
    assert (importance.block_influence > 0).all() and importance.drop_loss.shape == (c.n_layers,)
    importance.save(tmp_path / "importance.safetensors")
    again = Importance.load(tmp_path / "importance.safetensors")
    assert torch.equal(again.channels, importance.channels) and again.base_loss == importance.base_loss
    assert all(torch.equal(a, b) for a, b in zip(again.heads, importance.heads))


def test_pruning_to_its_own_shape_changes_nothing(model, importance):
    same = prune.apply(model, prune.plan(model.config, importance, Target()))
    assert same.config.uniform and same.num_parameters() == model.num_parameters()
    assert torch.equal(logits(same, IDS), logits(model, IDS))


def test_what_goes_is_the_lowest_scored(model, importance):
    c = model.config
    p = prune.plan(c, importance, Target(layers=2, hidden=24, mlp=20, kv_heads=c.n_kv_heads - 1))
    dropped = (set(range(c.n_layers)) - set(p.layers)).pop()
    assert importance.drop_loss[dropped] == importance.drop_loss.min()
    gone_channels = [i for i in range(c.dim) if i not in set(p.channels.tolist())]
    assert importance.channels[p.channels].min() >= importance.channels[gone_channels].max()
    for n, i in enumerate(p.layers):
        kept = importance.neurons[i][p.neurons[n]]
        gone = importance.neurons[i][[j for j in range(c.intermediate_size) if j not in set(p.neurons[n].tolist())]]
        assert kept.min() >= gone.max()
        group = c.n_heads // c.n_kv_heads
        sums = importance.heads[i].view(c.n_kv_heads, group).sum(1)
        gone_group = (set(range(c.n_kv_heads)) - set(p.kv_groups[n].tolist())).pop()
        assert sums[gone_group] == sums.min()


def test_the_sliced_model_equals_the_masked_full_model(model, importance):
    c = model.config
    group = c.n_heads // c.n_kv_heads
    target = Target(layers=2, heads=(c.n_kv_heads - 1) * (group - 1), kv_heads=c.n_kv_heads - 1, mlp=17)
    p = prune.plan(c, importance, target)
    small = prune.apply(model, p)
    assert small.config.n_layers == 2 and small.config.layer(0) == LayerShape(target.heads, target.kv_heads, 17)
    masked = tiny_model(**{k: getattr(c, k) for k in ("attention_bias", "arch", "tie_embeddings", "n_heads",
                                                       "n_kv_heads", "head_dim")}).eval()
    masked.load_state_dict(model.state_dict())
    with torch.no_grad():
        for n, i in enumerate(p.layers):
            a, m = masked.layers[i].self_attn, masked.layers[i].mlp
            drop_heads = [h for h in range(c.n_heads) if h not in set(p.heads[n].tolist())]
            o = a.o_proj.weight.view(c.dim, c.n_heads, c.head_dim)
            o[:, drop_heads] = 0  # a head whose output is zeroed contributes nothing
            drop = [j for j in range(c.intermediate_size) if j not in set(p.neurons[n].tolist())]
            m.down_proj.weight[:, drop] = 0
        masked.layers = torch.nn.ModuleList([masked.layers[i] for i in p.layers])
    assert (logits(small, IDS) - logits(masked, IDS)).abs().max() < 1e-5
    assert small.num_parameters() < model.num_parameters()


def test_per_layer_shapes_and_tied_embeddings(importance, model):
    c = model.config
    shapes = [LayerShape(c.n_heads, c.n_kv_heads, 40), LayerShape(c.n_kv_heads, c.n_kv_heads, 8),
              LayerShape(c.n_kv_heads - 1, c.n_kv_heads - 1, 24)]
    small = prune.apply(model, prune.plan(c, importance, Target(hidden=16, layer_shapes=shapes)))
    assert [small.config.layer(i) for i in range(3)] == shapes and small.config.dim == 16
    assert (small.lm_head.weight is small.embed_tokens.weight) == c.tie_embeddings
    assert logits(small, IDS).shape == (1, IDS.shape[1], c.vocab_size)


def test_impossible_shapes_are_clear_errors(model, importance):
    c = model.config
    with pytest.raises(TinythinkError, match="KV groups"):
        prune.plan(c, importance, Target(heads=c.n_heads, kv_heads=1))
    with pytest.raises(TinythinkError, match="--layers"):
        prune.plan(c, importance, Target(layers=c.n_layers + 1))


def test_a_budget_is_met_by_shapes_scored_on_held_out_loss(model, importance, tiny_data):
    from tinythink.compress import search

    c = model.config
    budget = prune.parameters(c, embeddings=False) // 2
    found = search.candidates(c, budget, embeddings=False, multiple=8)
    assert len(found) > 1
    per_width = 3 * c.dim * c.n_layers  # one more MLP neuron in every layer
    for cand in found:
        assert abs(cand.parameters - budget) <= 8 * per_width / 2 + 1
        assert cand.parameters == prune.parameters(search.shape_config(c, cand.target), embeddings=False)
    ranked = search.best_shape(model, importance, budget, tiny_data[1], embeddings=False, multiple=8, progress=False)
    assert [r.loss for r in ranked] == sorted(r.loss for r in ranked)
    with pytest.raises(TinythinkError, match="no uniform shape"):
        search.candidates(c, 10, embeddings=False, multiple=8)
