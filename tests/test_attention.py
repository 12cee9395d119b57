"""Every attention variant against an independent computation of its formula, plus shapes, counts, errors."""

from __future__ import annotations

import math

import pytest
import torch

from daamlab.attention import build_attention, gated_names, is_gated, variants
from daamlab.errors import DaamlabError
from daamlab.models.decoder import DATDecoder, square_map

torch.manual_seed(0)


def n_trainable(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters() if p.requires_grad)


def daam_reference(x, delta, xi, g):
    """Algorithm 1 written out head by head, feature by feature: a loop, not the module's reshapes."""
    B, N, d = x.shape
    n = N // g
    out = torch.empty_like(x)
    for h in range(g):
        chunk = x[:, h * n : (h + 1) * n, :]  # (B, n, d), in fp32 like the module: E[x^2]-mu^2 cancels
        mean = chunk.sum(1, keepdim=True) / n
        var = (chunk**2).sum(1, keepdim=True) / n - mean**2
        var = var.abs() + 1e-8
        y_norm = (chunk - (mean + delta[h])) / torch.sqrt(var + 1e-5)
        gate = torch.exp(-(y_norm**2) / (2 * xi[h]))
        out[:, h * n : (h + 1) * n, :] = chunk * gate
    return out


@pytest.mark.parametrize("name,g", [("daam", 8), ("daam_v2", 1), ("gaussian", 8)])
def test_daam_matches_algorithm_1(name, g):
    x = torch.randn(4, 24, 32) * 3 + 1
    m = build_attention(name, 24, 32)
    if name != "gaussian":  # move the parameters off their init so delta and xi both matter
        with torch.no_grad():
            m.delta.normal_(0, 0.3)
            m.xi.uniform_(0.5, 3.0)
    y, w = m(x, return_gates=True)
    ref = daam_reference(x, m.delta, m.xi, g)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y, x * w)
    assert w.shape == x.shape and (w >= 0).all() and (w <= 1).all()


def test_daam_gates_depend_on_their_own_head_only():
    x = torch.randn(2, 24, 16)
    m = build_attention("daam", 24, 16, num_heads=8)
    x2 = x.clone()
    x2[:, 3:6] += 5.0  # head 1 only
    w1, w2 = m.gates(x), m.gates(x2)
    changed = (w1 - w2).abs().amax(dim=(0, 2)) > 1e-6  # per layer
    assert changed.tolist() == [i in (3, 4, 5) for i in range(24)]


@pytest.mark.parametrize(
    "name,N,d,expected",
    [
        ("daam", 24, 1024, 16_384),
        ("daam_v2", 24, 1024, 2_048),
        ("daam", 40, 5120, 81_920),
        ("daam_v2", 40, 5120, 10_240),
    ],
)
def test_daam_parameter_counts_match_the_paper(name, N, d, expected):
    assert n_trainable(build_attention(name, N, d)) == expected


def test_gaussian_has_no_trainable_density_parameters():
    m = build_attention("gaussian", 24, 1024)
    assert n_trainable(m) == 0
    assert set(dict(m.named_buffers())) == {"delta", "xi"}
    assert torch.all(m.xi == 2) and torch.all(m.delta == 0)


@pytest.mark.parametrize(
    "name", ["daam", "daam_v2", "daam_mixture", "gq_daam", "gq_daam_std", "mhsa", "mhsa_bn", "weighted_sum"]
)
def test_gradients_reach_every_parameter(name):
    m = build_attention(name, 24, 64)
    x = torch.randn(8, 24, 64, requires_grad=True)
    m(x).square().mean().backward()
    for pname, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}.{pname} got no gradient"
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["daam", "daam_mixture", "gq_daam", "gq_daam_std"])
def test_heads_must_divide_layers(name):
    with pytest.raises(
        DaamlabError,
        match=r"num_heads=7 does not divide the encoder's 24 layers.*\[1, 2, 3, 4, 6, 8, 12, 24\]",
    ):
        build_attention(name, 24, 64, num_heads=7)


def test_unknown_attention_and_unknown_key():
    with pytest.raises(DaamlabError, match="unknown attention 'daam3'; choose one of: daam, daam_mixture"):
        build_attention("daam3", 24, 64)
    with pytest.raises(DaamlabError, match="attention 'mhsa'.*num_gaussians"):
        build_attention("mhsa", 24, 64, num_gaussians=4)


def mixture_reference(x, offsets, c, g):
    """The released DensityBlock: literal product of normalised Gaussians, sum-normalised, residual."""
    B, N, d = x.shape
    n = N // g
    out = torch.empty_like(x)
    clamped = torch.zeros_like(x, dtype=torch.bool)  # where the released sum fell under eps
    for h in range(g):
        chunk = x[:, h * n : (h + 1) * n].double()
        mean = chunk.mean(1, keepdim=True)
        var = chunk.var(1, keepdim=True, unbiased=True) + 1e-8
        mixture = torch.ones_like(chunk)
        for k in range(offsets.shape[1]):
            y = (chunk - (mean + offsets[h, k].double())) / torch.sqrt(var)
            ck = c[h, k].double()
            mixture = mixture * torch.exp(-(y**2) / (2 * ck**2)) / torch.sqrt(2 * math.pi * ck**2)
        total = mixture.sum(1, keepdim=True)
        clamped[:, h * n : (h + 1) * n] = (total < 1e-8).expand_as(chunk)
        mixture = mixture / total.clamp(min=1e-8)
        out[:, h * n : (h + 1) * n] = (chunk * mixture + chunk).to(x.dtype)
    return out, clamped


@pytest.mark.parametrize("normalise", ["clamp", "log"])
def test_mixture_matches_released_block_and_counts_64_parameters(normalise):
    m = build_attention("daam_mixture", 24, 32, normalise=normalise)
    assert n_trainable(m) == 64  # the paper's Table 3: g=8 x K=4 x 2
    with torch.no_grad():
        m.offsets.normal_(0, 0.2)
        m.c.uniform_(0.8, 2.0)  # where the released literal product does not underflow
    x = torch.randn(3, 24, 32)
    ref, clamped = mixture_reference(x, m.offsets, m.c, 8)
    assert clamped.float().mean() < 0.01  # the clamp bites rarely: both are the released block elsewhere
    torch.testing.assert_close(m(x)[~clamped], ref[~clamped], rtol=1e-5, atol=1e-5)
    if normalise == "clamp":  # the literal product: the released block everywhere
        torch.testing.assert_close(m(x), ref, rtol=1e-5, atol=1e-5)
    _, w = m(x, return_gates=True)
    sums = w.view(3, 8, 3, 32).sum(2)
    bites = clamped.view(3, 8, 3, 32)[:, :, 0]
    torch.testing.assert_close(sums[~bites], torch.ones_like(sums[~bites]))  # sums to 1 per head


def test_mixture_normalisations_differ_exactly_where_the_clamp_bites():
    assert build_attention("daam_mixture", 24, 8).normalise == "clamp"  # the default: as released
    torch.manual_seed(0)
    clamp = build_attention("daam_mixture", 24, 8, c_init=0.05)
    log = build_attention("daam_mixture", 24, 8, c_init=0.05, normalise="log")
    log.load_state_dict(clamp.state_dict())
    x = torch.randn(2, 24, 8) * 10
    ref, clamped = mixture_reference(x, clamp.offsets, clamp.c, 8)
    assert clamped.any() and not clamped.all()
    # "clamp" is the released block everywhere, where its weights stop summing to 1 included
    torch.testing.assert_close(clamp(x), ref, rtol=1e-5, atol=1e-5)
    (_, w_clamp), (_, w_log) = clamp(x, return_gates=True), log(x, return_gates=True)
    sums_clamp, sums_log = w_clamp.view(2, 8, 3, 8).sum(2), w_log.view(2, 8, 3, 8).sum(2)
    bites = clamped.view(2, 8, 3, 8)[:, :, 0]  # (B, g, d): the groups whose sum fell under 1e-8
    assert (sums_clamp[bites] < 1 - 1e-3).all()  # released: no longer a distribution there
    torch.testing.assert_close(sums_log, torch.ones_like(sums_log))  # log: a distribution everywhere
    # equal where the clamp does not bite, different where it does
    torch.testing.assert_close(w_log[~clamped], w_clamp[~clamped], rtol=1e-4, atol=1e-6)
    assert not torch.allclose(w_log[clamped], w_clamp[clamped])
    with pytest.raises(DaamlabError, match="attention.normalise must be 'clamp'"):
        build_attention("daam_mixture", 24, 8, normalise="softmax")


def test_mixture_c_init():
    torch.manual_seed(1)
    assert not torch.allclose(build_attention("daam_mixture", 24, 8).c, torch.full((8, 4), 2.0))
    assert torch.equal(build_attention("daam_mixture", 24, 8, c_init=2.0).c, torch.full((8, 4), 2.0))


def test_gq_daam_parameter_count_and_shapes():
    m = build_attention("gq_daam", 24, 1024)
    assert n_trainable(m.daam) == 16_384 and n_trainable(m.proj) == 524_800 and n_trainable(m.gqa) == 460_288
    y, w = m(torch.randn(2, 24, 1024), return_gates=True)
    assert y.shape == (2, 24, 512) and w.shape == (2, 24, 1024) and (m.out_layers, m.out_dim) == (24, 512)


def test_gqa_sums_the_query_group_before_one_softmax_per_kv_head():
    """The published reading (tests/test_gq_daam.py checks it at the paper's shapes)."""
    from daamlab.attention.gq_daam import GroupedQueryAttention

    gqa = GroupedQueryAttention(embed_dim=64, query_heads=8, kv_heads=2)
    x = torch.randn(2, 5, 64)
    q = gqa.q_proj(x).view(2, 5, 8, 8)  # (B, N, 8 heads, hd)
    k = gqa.k_proj(x).view(2, 5, 2, 8)
    v = gqa.v_proj(x).view(2, 5, 2, 8)
    heads = []
    for kv in range(2):  # query heads 4*kv .. 4*kv+3 share key/value head kv; their scores are summed
        s = sum(q[:, :, kv * 4 + j] @ k[:, :, kv].transpose(1, 2) for j in range(4)) / 8.0  # temp 1/hd
        heads.append(s.softmax(-1) @ v[:, :, kv])
    ref = gqa.out_proj(gqa.norm(torch.cat(heads, dim=-1)))
    torch.testing.assert_close(gqa(x), ref, rtol=1e-5, atol=1e-5)


def test_mhsa_attends_across_layers_not_the_batch():
    m = build_attention("mhsa", 24, 64).eval()
    assert n_trainable(m) == 4 * 64 * 64 + 4 * 64
    x = torch.randn(6, 24, 64)
    torch.testing.assert_close(m(x)[:2], m(x[:2]))  # a sample's output ignores the rest of the batch
    assert not torch.allclose(m(x)[0, 0], m(torch.cat([x[:1, :1], x[:1, 1:] + 1], 1))[0, 0])


def test_mhsa_paper_mixes_the_batch_as_published():
    m = build_attention("mhsa_paper", 24, 64).eval()
    x = torch.randn(6, 24, 64)
    assert not torch.allclose(m(x)[:2], m(x[:2]))  # predictions depend on batch composition
    one = build_attention("mhsa_paper", 24, 64, layer=22)
    assert one(x).shape == (6, 1, 64) and one.out_layers == 1
    assert n_trainable(build_attention("mhsa_bn", 24, 1024)) == 4_198_400 + 48


def test_weighted_sum_and_identity():
    m = build_attention("weighted_sum", 5, 3)
    x = torch.randn(2, 5, 3)
    torch.testing.assert_close(m(x), x.mean(1, keepdim=True))  # equal weights at init
    assert torch.equal(build_attention("none", 5, 3)(x), x)


def test_every_variant_maps_to_its_declared_output_shape():
    x = torch.randn(3, 24, 64)
    for name in variants():
        m = build_attention(name, 24, 64)
        y = m(x)
        assert y.shape == (3, m.out_layers, m.out_dim), name
        if is_gated(m):
            assert m(x, return_gates=True)[1].shape == x.shape
        else:  # a module without gates says so by its class, and refuses the flag
            with pytest.raises(TypeError):
                m(x, return_gates=True)


def test_gated_is_a_property_of_the_module_class():
    assert gated_names() == ["daam", "daam_mixture", "daam_v2", "gaussian", "gq_daam", "gq_daam_std"]
    assert all(is_gated(build_attention(n, 24, 64)) for n in gated_names())


def test_dat_decoder_matches_published_counts_and_maps():
    assert square_map(1024) == (32, 32) and square_map(5120) == (64, 80) and square_map(384) == (16, 24)
    dec = DATDecoder(num_layers=24, dim=1024, num_classes=4)
    convs = sum(p.numel() for p in (*dec.conv1.parameters(), *dec.conv2.parameters()))
    assert convs == 221_720
    total = n_trainable(dec) + n_trainable(build_attention("daam", 24, 1024))
    assert total == 336_412  # the IEMOCAP DAAMv1 script's "# params" comment
    assert dec(torch.randn(2, 24, 1024)).shape == (2, 4)
    with pytest.raises(DaamlabError, match=r"map_shape=\[30, 30\] holds 900 values but each layer has 1024"):
        DATDecoder(num_layers=24, dim=1024, num_classes=4, map_shape=[30, 30])
