"""LSTM, scaled dot-product and multi-head attention against PyTorch: outputs, and gradients
of every parameter from copied weights (interp and cpu backends); an LSTM classifier trains.
The spatial layers are in test_spatial_layers.py. Op kernels against the references and VJPs
against finite differences are in tests/backends and tests/graph/test_ops_vjp_cases.py."""

from __future__ import annotations

import numpy as np
import pytest

import numbagrad as ng
from numbagrad import functional as F
from numbagrad import nn, optim
from numbagrad.backends import get_backend
from numbagrad.graph import Builder

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch
TF = torch.nn.functional

# The twin-comparison harness, shared by the spatial-layer, LSTM and attention tests.
import _twin_harness as _h  # noqa: E402  (a sibling helper: tests/conftest.py)

BACKENDS, _check_against_torch, _x = _h.BACKENDS, _h._check_against_torch, _h._x
_load_twin = _h._load_twin


# --- LSTM -----------------------------------------------------------------------------------


class Seq(nn.Module):
    """An LSTM whose initial state is trainable (to check those gradients too); returns the
    outputs, or (outputs, h_n, c_n)."""

    def __init__(self, states=False, with_hx=True, **cfg):
        super().__init__()
        self.lstm = nn.LSTM(**cfg)
        layers, hidden = cfg.get("num_layers", 1), cfg["hidden_size"]
        if with_hx:
            self.h0 = nn.Parameter(_x(layers, 2, hidden, seed=8))
            self.c0 = nn.Parameter(_x(layers, 2, hidden, seed=9))
        self.states, self.with_hx = states, with_hx

    def forward(self, x):
        out, (h, c) = self.lstm(x, (self.h0, self.c0) if self.with_hx else None)
        return (out, h, c) if self.states else out


class TorchSeq(torch.nn.Module):
    def __init__(self, with_hx=True, **cfg):
        super().__init__()
        self.lstm = torch.nn.LSTM(**cfg)
        layers, hidden = cfg.get("num_layers", 1), cfg["hidden_size"]
        if with_hx:
            self.h0 = torch.nn.Parameter(torch.zeros(layers, 2, hidden))
            self.c0 = torch.nn.Parameter(torch.zeros(layers, 2, hidden))
        self.with_hx = with_hx

    def forward(self, x):
        return self.lstm(x, (self.h0, self.c0) if self.with_hx else None)[0]


LSTM_CFGS = [
    dict(input_size=3, hidden_size=4, with_hx=False),
    dict(input_size=3, hidden_size=4, batch_first=True),
    dict(input_size=2, hidden_size=3, num_layers=2, bias=False),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cfg", LSTM_CFGS, ids=["zero_state", "batch_first_hx", "two_layers"])
def test_lstm_matches_torch(backend, cfg):
    ng.manual_seed(3)
    model, twin = Seq(**cfg), TorchSeq(**cfg)
    assert list(model.state_dict()) == list(twin.state_dict())
    batch_first = cfg.get("batch_first", False)
    x = (
        _x(2, 3, cfg["input_size"], seed=10)
        if batch_first
        else _x(3, 2, cfg["input_size"], seed=10)
    )
    _check_against_torch(model, twin, x, backend)


def test_lstm_final_states_and_unbatched_input_match_torch():
    ng.manual_seed(4)
    model = Seq(states=True, with_hx=False, input_size=3, hidden_size=2, num_layers=2)
    twin = torch.nn.LSTM(3, 2, num_layers=2)
    twin.load_state_dict({k[5:]: torch.tensor(v) for k, v in model.state_dict().items()})
    x = _x(4, 2, 3, seed=11)
    out, h, c = ng.compile(model, ng.Spec(x.shape))(x)
    t_out, (t_h, t_c) = twin(torch.tensor(x))
    for ours, theirs in ((out, t_out), (h, t_h), (c, t_c)):
        np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-5, atol=1e-6)
    single = ng.compile(model, ng.Spec((4, 3)))(x[:, 0])  # unbatched (T, I)
    t_single = twin(torch.tensor(x[:, 0]))
    np.testing.assert_allclose(single[0], t_single[0].detach().numpy(), rtol=1e-5, atol=1e-6)
    assert single[1].shape == (2, 2)


def test_lstm_classifier_trains():
    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm, self.head = nn.LSTM(3, 8, batch_first=True), nn.Linear(8, 2)

        def forward(self, x):
            out, (h, _) = self.lstm(x)
            return self.head(h.reshape(x.shape[0], 8))

    ng.manual_seed(5)
    rng = np.random.default_rng(12)
    x = rng.standard_normal((8, 4, 3)).astype(np.float32)
    y = (x[:, :, 0].sum(1) > 0).astype(np.int64)
    step = ng.compile_training(
        Classifier(),
        nn.CrossEntropyLoss(),
        optim.Adam(0.05),
        ng.Spec(x.shape),
        ng.Spec(y.shape, "int64"),
    )
    losses = [step(x, y) for _ in range(15)]
    assert losses[-1] < 0.5 * losses[0]


# --- attention ------------------------------------------------------------------------------


def _keys_values(kind, x, memory):
    if kind == "self":
        return x, x
    return (memory, memory) if kind == "memory" else (memory, memory * 2.0)


class Attend(nn.Module):
    """Self-attention, or attention to a trainable memory (keys = values, or values scaled)."""

    def __init__(self, kind="self", masks=False, **cfg):
        super().__init__()
        self.attn = nn.MultiheadAttention(**cfg)
        self.kind, self.masks = kind, masks
        bf = cfg.get("batch_first", False)
        if kind != "self":
            self.memory = nn.Parameter(_x(2, 5, 4, seed=13) if bf else _x(5, 2, 4, seed=13))

    def forward(self, x):
        kv = _keys_values(self.kind, x, getattr(self, "memory", None))
        length, source = (
            x.shape[1 if self.attn.batch_first else 0],
            kv[0].shape[1 if self.attn.batch_first else 0],
        )
        kw = {}
        if self.masks:
            kw["attn_mask"] = np.triu(np.ones((length, source), bool), 1)
            kw["key_padding_mask"] = np.array([[False] * source, [False] * (source - 1) + [True]])
        out, weights = self.attn(x, *kv, **kw)
        return out + (weights * weights).sum() * 0.25 if self.masks else out


class TorchAttend(torch.nn.Module):
    def __init__(self, kind="self", masks=False, **cfg):
        super().__init__()
        self.attn = torch.nn.MultiheadAttention(**cfg)
        self.kind, self.masks = kind, masks
        if kind != "self":
            self.memory = torch.nn.Parameter(
                torch.zeros(2, 5, 4) if cfg.get("batch_first") else torch.zeros(5, 2, 4)
            )

    def forward(self, x):
        kv = _keys_values(self.kind, x, getattr(self, "memory", None))
        bf = self.attn.batch_first
        length, source = x.shape[1 if bf else 0], kv[0].shape[1 if bf else 0]
        kw = {}
        if self.masks:
            kw["attn_mask"] = torch.triu(torch.ones(length, source, dtype=torch.bool), 1)
            kw["key_padding_mask"] = torch.tensor(
                [[False] * source, [False] * (source - 1) + [True]]
            )
        out, weights = self.attn(x, *kv, **kw)
        return out + (weights * weights).sum() * 0.25 if self.masks else out


MHA_CASES = [
    ("self", False, dict(embed_dim=4, num_heads=2)),
    ("memory", False, dict(embed_dim=4, num_heads=2, batch_first=True)),
    ("distinct", True, dict(embed_dim=4, num_heads=1)),
    ("self", True, dict(embed_dim=4, num_heads=2, batch_first=True, bias=False)),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "kind,masks,cfg",
    MHA_CASES,
    ids=["self", "kv_memory_batch_first", "distinct_masks", "self_masks_nobias"],
)
def test_multihead_attention_matches_torch(backend, kind, masks, cfg):
    ng.manual_seed(6)
    model, twin = Attend(kind, masks, **cfg), TorchAttend(kind, masks, **cfg)
    assert list(model.state_dict()) == list(twin.state_dict())
    x = _x(2, 3, 4, seed=14) if cfg.get("batch_first") else _x(3, 2, 4, seed=14)
    _check_against_torch(model, twin, x, backend, rtol=2e-4, atol=2e-5)


def test_attention_weights_and_self_attention_uses_one_projection():
    ng.manual_seed(7)
    mha = nn.MultiheadAttention(4, 2)
    twin = torch.nn.MultiheadAttention(4, 2)
    _load_twin(mha, twin)

    class Both(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = mha

        def forward(self, x):
            out, w = self.attn(x, x, x, average_attn_weights=False)
            return out, w

    x = _x(3, 2, 4, seed=15)
    compiled = ng.compile(Both(), ng.Spec(x.shape))
    out, weights = compiled(x)
    t_out, t_w = twin(*(torch.tensor(x),) * 3, average_attn_weights=False)
    np.testing.assert_allclose(out, t_out.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(weights, t_w.detach().numpy(), rtol=1e-5, atol=1e-6)
    matmuls = [n for n in ng.trace(Both(), ng.Spec(x.shape)).ops() if n.op == "matmul"]
    assert len(matmuls) == 4  # packed q/k/v projection, scores, weights @ v, out_proj


@pytest.mark.parametrize("backend", BACKENDS)
def test_scaled_dot_product_attention_matches_torch(backend):
    b = Builder()
    q, k, v = (b.leaf("input", s, "float32") for s in ((2, 2, 3, 4), (2, 2, 5, 4), (2, 2, 5, 3)))
    allowed = np.random.default_rng(16).random((3, 5)) > 0.3
    allowed[:, 0] = True
    outs = [
        F.scaled_dot_product_attention(q, k, v),
        F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=0.3),
        F.scaled_dot_product_attention(q, k, k, is_causal=True),
    ]
    graph = b.build(outs)
    arrays = [_x(*n.shape, seed=17 + i) for i, n in enumerate((q, k, v))]
    exe = get_backend(backend).compile(graph)
    for leaf, a in zip((q, k, v), arrays):
        exe.set_input(leaf.id, a)
    exe.run()
    tq, tk, tv = (torch.tensor(a) for a in arrays)
    expected = [
        TF.scaled_dot_product_attention(tq, tk, tv),
        TF.scaled_dot_product_attention(tq, tk, tv, attn_mask=torch.tensor(allowed), scale=0.3),
        TF.scaled_dot_product_attention(tq, tk, tk, is_causal=True),
    ]
    for got, want in zip(exe.output_arrays(), expected):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-6)
