"""GQ-DAAM against the published computation, at the paper's shapes, and the standard GQA beside it.

`published_logits` below is written from the released GQDAAM scripts' equations, one head and one
layer group at a time (loops and explicit sums, none of the module's reshapes or einsums):
    DAAM (per group of layers)  ->  Linear(d, 512)  ->  for each kv head h:
        S_h = sum_{j in group h} (q_j / sqrt(64)) k_h^T / sqrt(64),  A_h = softmax(S_h),  o_h = A_h v_h
    -> LayerNorm over [o_1, o_2] (128 wide) -> Linear(128, 512)
    -> each layer's 512 values as the script's H x W map -> conv3x3 -> ReLU -> conv3x3 -> ReLU -> FC.
It takes its weights from the daamlab modules and is compared in float64, values and gradients.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch.nn import functional as F

from daamlab.attention import build_attention
from daamlab.errors import DaamlabError
from daamlab.models.decoder import build_decoder

# experiment: (N layers, d, classes, the published script's map of the 512 GQA outputs)
PAPER = {"paper_iemocap": (24, 1024, 4, (8, 64)), "paper_agnews": (40, 5120, 4, (64, 8))}


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


def published_gqa(x, gqa, query_heads=8, kv_heads=2):
    """x: (B, N, 512) -> (B, N, 512): the released scaled_dot_product_gqa + MultiheadGQA, by loops."""
    B, N, E = x.shape
    hd = E // query_heads
    group = query_heads // kv_heads
    q = x @ gqa.q_proj.weight.T + gqa.q_proj.bias  # (B, N, 512)
    k = x @ gqa.k_proj.weight.T + gqa.k_proj.bias  # (B, N, 128)
    v = x @ gqa.v_proj.weight.T + gqa.v_proj.bias
    outs = []
    for h in range(kv_heads):
        kh, vh = k[..., h * hd : (h + 1) * hd], v[..., h * hd : (h + 1) * hd]  # (B, N, 64)
        scores = 0
        for j in range(h * group, (h + 1) * group):  # query head j folds into kv head j // group
            qj = q[..., j * hd : (j + 1) * hd] / math.sqrt(hd)  # the query's scaling ...
            scores = scores + qj @ kh.transpose(1, 2)  # ... summed inside the scores: (B, N, N)
        attn = torch.softmax(scores / math.sqrt(hd), dim=-1)  # ... and the scores' scaling
        outs.append(attn @ vh)  # (B, N, 64)
    o = torch.cat(outs, dim=-1)  # (B, N, 128)
    mean = o.mean(-1, keepdim=True)
    var = ((o - mean) ** 2).mean(-1, keepdim=True)  # LayerNorm on the kv width, biased variance
    o = (o - mean) / torch.sqrt(var + gqa.norm.eps) * gqa.norm.weight + gqa.norm.bias
    return o @ gqa.out_proj.weight.T + gqa.out_proj.bias


def published_daam(x, delta, xi, g):
    B, N, d = x.shape
    n = N // g
    heads = []
    for h in range(g):  # head h: layers h*n .. h*n+n-1
        c = x[:, h * n : (h + 1) * n]
        mean = c.mean(1, keepdim=True)
        var = ((c**2).mean(1, keepdim=True) - mean**2).abs() + 1e-8
        heads.append(c * torch.exp(-(((c - (mean + delta[h])) / torch.sqrt(var + 1e-5)) ** 2) / (2 * xi[h])))
    return torch.cat(heads, dim=1)


def published_logits(x, att, dec, map_shape):
    B, N, _ = x.shape
    y = published_daam(x, att.daam.delta, att.daam.xi, att.daam.num_heads)
    y = y @ att.proj.weight.T + att.proj.bias  # embed_transform: (B, N, 512)
    y = published_gqa(y, att.gqa)
    y = y.reshape(B, N, *map_shape)  # the script's reshape / view: row-major
    y = F.relu(F.conv2d(y, dec.conv1.weight, dec.conv1.bias, padding=1))
    y = F.relu(F.conv2d(y, dec.conv2.weight, dec.conv2.bias, padding=1))
    return y.flatten(1) @ dec.fc.weight.T + dec.fc.bias


def paper_model(compose, experiment):
    """The attention and decoder exactly as the composed paper experiment builds them."""
    N, d, classes, _ = PAPER[experiment]
    cfg = compose([f"experiment={experiment}", "attention=gq_daam"])
    att_cfg = {k: v for k, v in cfg.attention.items() if k != "name"}
    dec_cfg = {k: v for k, v in cfg.decoder.items() if k != "name"}
    att = build_attention("gq_daam", N, d, **att_cfg)
    dec = build_decoder(cfg.decoder.name, att.out_layers, att.out_dim, classes, **dec_cfg)
    with torch.no_grad():  # off their init, so delta, xi and the LayerNorm's affine all matter
        att.daam.delta.normal_(0, 0.3)
        att.daam.xi.uniform_(0.5, 3.0)
        att.gqa.norm.weight.normal_(1, 0.2)
        att.gqa.norm.bias.normal_(0, 0.2)
    return att, dec


@pytest.mark.parametrize("experiment", sorted(PAPER))
def test_paper_experiments_set_the_published_map_shape(compose, experiment):
    *_, shape = PAPER[experiment]
    assert tuple(compose([f"experiment={experiment}", "attention=gq_daam"]).decoder.map_shape) == shape
    assert tuple(compose([f"experiment={experiment}", "attention=gq_daam_std"]).decoder.map_shape) == shape
    assert compose([f"experiment={experiment}", "attention=daam"]).decoder.map_shape is None  # 32x32, 64x80
    # CIFAR-100's script reshapes 512 values to 32x32 and cannot run: ours uses IEMOCAP's map (same 24 x 512)
    assert tuple(compose(["experiment=paper_cifar100", "attention=gq_daam"]).decoder.map_shape) == (8, 64)


@pytest.mark.parametrize("experiment", sorted(PAPER))
def test_gq_daam_equals_the_published_computation_at_paper_shapes(compose, experiment):
    torch.manual_seed(0)
    N, d, _, shape = PAPER[experiment]
    att, dec = paper_model(compose, experiment)
    assert dec.map_shape == shape
    att, dec = att.double(), dec.double()
    x = (torch.randn(3, N, d, dtype=torch.float64) * 2 + 0.5).requires_grad_()
    ours = dec(att(x))
    ref = published_logits(x, att, dec, shape)
    assert rel(ours, ref) < 1e-5
    params = [x, *att.parameters(), *dec.parameters()]
    probe = torch.randn_like(ref)  # a random direction: every logit's gradient counts
    g_ours = torch.autograd.grad((ours * probe).sum(), params)
    g_ref = torch.autograd.grad((ref * probe).sum(), params)
    for g1, g2 in zip(g_ours, g_ref, strict=True):
        # the key bias moves every score of a row alike, which the softmax ignores: its gradient is
        # zero up to rounding (1e-18) in both, so that one is compared absolutely
        assert (g1 - g2).norm() <= 1e-5 * g2.norm() + 1e-12

    # the checks have teeth: the per-query-head softmax (the old reading, and textbook GQA) and
    # daamlab's old default map (16x32) both miss the published logits by far more than 1e-5
    with torch.no_grad():
        y = att.proj(att.daam(x))
        gqa, hd = att.gqa, att.gqa.head_dim
        q = gqa.q_proj(y).view(3, N, 2, 4, hd) / hd**0.5
        k, v = gqa.k_proj(y).view(3, N, 2, hd), gqa.v_proj(y).view(3, N, 2, hd)
        attn = (torch.einsum("bnhgd,bshd->bhgns", q, k) / hd**0.5).softmax(-1)
        per_head = gqa.out_proj(gqa.norm(torch.einsum("bhgns,bshd->bnhd", attn, v).reshape(3, N, -1)))
        dec_square = build_decoder("dat", N, 512, 4).double()
        dec_square.load_state_dict(dec.state_dict())  # same weights, the 16x32 map
        assert dec_square.map_shape == (16, 32)
        assert rel(dec(per_head), ref) > 1e-2
        assert rel(dec_square(att(x)), ref) > 1e-2


def test_gq_daam_float32_matches_float64_reference():
    torch.manual_seed(1)
    att = build_attention("gq_daam", 24, 1024)
    x = torch.randn(4, 24, 1024)
    ref = copy.deepcopy(att).double()
    y = published_daam(x.double(), ref.daam.delta, ref.daam.xi, 8)
    assert rel(att(x).double(), published_gqa(ref.proj(y), ref.gqa)) < 1e-5


def test_published_gqa_sums_the_group_inside_the_scores():
    """The published GQA: equal to one query per kv head, the sum of its group's query heads."""
    torch.manual_seed(2)
    gqa = build_attention("gq_daam", 8, 64, num_heads=1).gqa
    x = torch.randn(2, 8, 512)
    hd = 64
    q = gqa.q_proj(x).view(2, 8, 2, 4, hd).sum(3)  # the group's 4 query heads summed: (B, N, 2, hd)
    k, v = gqa.k_proj(x).view(2, 8, 2, hd), gqa.v_proj(x).view(2, 8, 2, hd)
    out = torch.stack(
        [F.scaled_dot_product_attention(q[:, :, h], k[:, :, h], v[:, :, h], scale=1 / hd) for h in range(2)],
        2,
    )
    torch.testing.assert_close(gqa(x), gqa.out_proj(gqa.norm(out.reshape(2, 8, 128))), rtol=1e-5, atol=1e-5)


def n_trainable(m):
    return sum(p.numel() for p in m.parameters() if p.requires_grad)


def test_gq_daam_std_is_standard_gqa():
    torch.manual_seed(3)
    m = build_attention("gq_daam_std", 24, 1024)
    assert n_trainable(m.daam) == 16_384 and n_trainable(m.proj) == 524_800
    assert n_trainable(m.gqa) == 2 * (512 * 512 + 512) + 2 * (512 * 128 + 128)  # 656,640: no LayerNorm
    y, w = m(torch.randn(2, 24, 1024), return_gates=True)
    assert y.shape == (2, 24, 512) and w.shape == (2, 24, 1024) and m.gated

    # per query head: its own softmax over its own scores, K/V of its group, heads concatenated
    gqa = m.gqa
    x = torch.randn(2, 6, 512)
    q, k, v = gqa.q_proj(x), gqa.k_proj(x), gqa.v_proj(x)
    heads = []
    for j in range(8):
        h = j // 4  # query heads 0-3 share kv head 0, 4-7 kv head 1
        s = q[..., j * 64 : (j + 1) * 64] @ k[..., h * 64 : (h + 1) * 64].transpose(1, 2) / 8.0
        heads.append(s.softmax(-1) @ v[..., h * 64 : (h + 1) * 64])
    ref = torch.cat(heads, -1) @ gqa.out_proj.weight.T + gqa.out_proj.bias
    torch.testing.assert_close(gqa(x), ref, rtol=1e-5, atol=1e-5)


def test_gq_daam_std_with_as_many_kv_heads_as_query_heads_is_mhsa():
    torch.manual_seed(4)
    gqa = build_attention("gq_daam_std", 6, 64, num_heads=1, kv_heads=8).gqa
    mha = torch.nn.MultiheadAttention(512, 8, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([gqa.q_proj.weight, gqa.k_proj.weight, gqa.v_proj.weight]))
        mha.in_proj_bias.copy_(torch.cat([gqa.q_proj.bias, gqa.k_proj.bias, gqa.v_proj.bias]))
        mha.out_proj.load_state_dict(gqa.out_proj.state_dict())
    x = torch.randn(3, 6, 512)
    torch.testing.assert_close(gqa(x), mha(x, x, x, need_weights=False)[0], rtol=1e-5, atol=1e-5)
    # with one kv head it is multi-query attention: every query head reads the same K and V
    mqa = build_attention("gq_daam_std", 6, 64, num_heads=1, kv_heads=1).gqa
    assert mqa.k_proj.out_features == 64 and mqa(x).shape == x.shape


def test_gq_daam_std_and_published_differ_and_heads_are_checked():
    torch.manual_seed(5)
    x = torch.randn(2, 24, 64)
    pub, std = build_attention("gq_daam", 24, 64), build_attention("gq_daam_std", 24, 64)
    shared = {k: v for k, v in pub.state_dict().items() if not k.startswith(("gqa.norm", "gqa.out_proj"))}
    std.load_state_dict(shared, strict=False)  # the same DAAM, projection, Q, K and V
    assert rel(std(x), pub(x)) > 0.1
    with pytest.raises(DaamlabError, match="kv_heads=3 must divide query_heads"):
        build_attention("gq_daam_std", 24, 64, kv_heads=3)
