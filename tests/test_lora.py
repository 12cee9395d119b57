"""LoRA / LoRA+ baselines on tiny random encoders: trainable counts (ours = peft's = the formula),
only adapters and the head change, checkpoints hold adapters + head and reload to the same predictions."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from omegaconf import open_dict

from daamlab.build import build as build_run
from daamlab.encoders import build_encoder
from daamlab.errors import DaamlabError
from daamlab.models.lora import LoraClassifier, route_attention_through_modules
from daamlab.record import RunRecord
from daamlab.training import evaluate, train

KIND = {"tiny_wavlm": "audio", "tiny_beit": "image", "tiny_llama": "text"}
D = 32  # the tiny encoders' width; 4 layers each


def small(encoder: str, *overrides: str) -> list[str]:
    return [
        "modality=toy",  # the fixed small protocol, whatever the default modality is
        "data=synthetic",
        f"data.kind={KIND[encoder]}",
        f"encoder={encoder}",
        "encoder.device=cpu",
        "data.num_train=16",
        "data.num_test=8",
        "attention=lora",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "logger=none",
        *overrides,
    ]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models on a shared 2-core machine


def build(compose, tmp_path, encoder: str, *overrides: str):
    cfg = compose([*small(encoder, *overrides), f"paths.cache_dir={tmp_path}"])
    dm, model = build_run(cfg)
    return cfg, dm, model


def per_layer(r: int, shapes: list[tuple[int, int]]) -> int:
    """LoRA adds A (r x in) and B (out x r) to each adapted Linear(in, out)."""
    return sum(r * (i + o) for i, o in shapes)


# (in, out) of the adapted projections per layer. Tiny Llama has 4 query heads and 2 key/value heads
# of width 8 (grouped-query attention), so its key and value projections are 32 -> 16.
@pytest.mark.parametrize(
    ("encoder", "targets", "shapes"),
    [
        ("tiny_wavlm", "[query,value]", [(D, D), (D, D)]),
        ("tiny_beit", "[query,value]", [(D, D), (D, D)]),
        ("tiny_llama", "[query,value]", [(D, D), (D, 16)]),
        ("tiny_llama", "[query,key]", [(D, D), (D, 16)]),
        ("tiny_wavlm", "[query,key,value,out_proj]", [(D, D)] * 4),
    ],
)
def test_trainable_count_is_peft_s_and_the_formula(compose, tmp_path, encoder, targets, shapes):
    cfg, dm, model = build(compose, tmp_path, encoder, f"attention.targets={targets}", "attention.r=4")
    adapters = 4 * per_layer(4, shapes)  # 4 layers
    peft_trainable, _ = model.backbone.get_nb_trainable_parameters()
    head = D * dm.num_classes + dm.num_classes  # Linear(d, classes) on the pooled last layer
    counts = model.param_counts
    assert counts["adapters"] == counts["attention"] == peft_trainable == adapters
    assert counts["head"] == head and counts["trainable"] == adapters + head
    frozen = sum(p.numel() for p in build_encoder(cfg.encoder).model.parameters())  # before peft
    assert counts["total"] == frozen + adapters + head
    names = {n.split(".")[-4] for n, p in model.backbone.named_parameters() if p.requires_grad}
    aliases = {"query": {"q_proj", "query"}, "key": {"k_proj", "key"}, "value": {"v_proj", "value"}}
    wanted = [aliases.get(t, {t}) for t in targets[1:-1].split(",")]
    assert len(names) == len(wanted) and all(names & a for a in wanted)


def test_alpha_over_r_scaling(compose, tmp_path):
    _, _, model = build(compose, tmp_path, "tiny_wavlm", "attention.r=4", "attention.alpha=16")
    layer = model.encoder.model.encoder.layers[0].attention.q_proj
    assert layer.scaling["default"] == 16 / 4  # peft's standard, not the published alpha


def test_only_adapters_and_head_change_after_steps(compose, tmp_path):
    _, dm, model = build(compose, tmp_path, "tiny_wavlm", "optim.weight_decay=0")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    before |= {n: b.clone() for n, b in model.named_buffers()}
    optimizer = model.configure_optimizers()["optimizer"]
    x, y = next(iter(dm.train_dataloader()))
    for _ in range(2):  # B starts at 0, so A's gradient is 0 on the first step
        optimizer.zero_grad()
        model.criterion(model(x), y).backward()
        optimizer.step()
    after = dict(model.named_parameters()) | dict(model.named_buffers())
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert changed == trainable
    assert any("lora_A" in n for n in changed) and any("lora_B" in n for n in changed)
    assert {"decoder.fc.weight", "decoder.fc.bias"} <= changed


def test_lora_plus_trains_b_faster_and_the_classifier(compose, tmp_path):
    _, _, model = build(compose, tmp_path, "tiny_wavlm", "attention=lora_plus", "optim.lr=1e-3")
    optimizer = model.configure_optimizers()["optimizer"]
    lr = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert {id(p) for n, p in named.items() if p.requires_grad} == set(lr)  # the head included
    assert all(lr[id(p)] == pytest.approx(2.828e-3) for n, p in named.items() if "lora_B" in n)
    assert all(lr[id(p)] == pytest.approx(1e-3) for n, p in named.items() if "lora_A" in n)
    assert lr[id(named["decoder.fc.weight"])] == pytest.approx(1e-3)


def test_checkpoint_holds_adapters_and_head_and_reloads_to_the_same_predictions(compose, tmp_path):
    cfg, dm, model = build(compose, tmp_path, "tiny_llama", "attention.r=2")
    trainer = L.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(model, datamodule=dm)
    path = tmp_path / "lora.ckpt"
    trainer.save_checkpoint(path)
    state = torch.load(path, weights_only=True)["state_dict"]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(state) == trainable | {"best_val_acc", "best_epoch"}
    assert all("lora_" in n or n.startswith("decoder.") for n in trainable)
    # rebuilt from the encoder's config (its source), adapters and head from the checkpoint
    restored = LoraClassifier.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    assert restored.encoder is not model.encoder
    x, _ = next(iter(dm.val_dataloader()))
    model.eval(), restored.eval()
    with torch.no_grad():
        torch.testing.assert_close(restored(x), model(x), rtol=0, atol=0)
        assert not torch.equal(
            model.decoder.fc.weight, build(compose, tmp_path, "tiny_llama")[2].decoder.fc.weight
        )


def test_a_checkpoint_of_other_targets_is_refused(compose, tmp_path):
    _, _, model = build(compose, tmp_path, "tiny_wavlm")
    state = model.state_dict()
    _, _, other = build(compose, tmp_path, "tiny_wavlm", "attention.targets=[query,key]")
    with pytest.raises(DaamlabError, match="does not fit this LoRA model"):
        other.load_state_dict(state)


def test_lora_run_writes_the_same_metrics_and_eval_restores_it(compose, tmp_path):
    cfg = compose([*small("tiny_wavlm", "attention.r=4"), f"paths.cache_dir={tmp_path / 'cache'}"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
    metrics = train(cfg)
    saved = RunRecord.read(tmp_path / "run" / "metrics.json")
    assert saved.attention == "lora" and saved.decoder == "linear" and saved.status == "complete"
    assert saved.params["adapters"] == 4 * per_layer(4, [(D, D), (D, D)])
    assert saved.splits["train"]["rows"] == 16 and saved.data_info["cache"] is None
    assert not (tmp_path / "cache").exists()  # never extracted
    (ckpt,) = (tmp_path / "run" / "checkpoints").glob("epoch_*.ckpt")
    eval_cfg = compose([f"ckpt_path={ckpt}", "trainer.enable_progress_bar=false"], config_name="eval")
    with open_dict(eval_cfg):
        eval_cfg.paths.output_dir = str(tmp_path / "eval")
    assert evaluate(eval_cfg).test == pytest.approx(metrics.test, rel=1e-6)


def test_bad_lora_settings_are_refused(compose, tmp_path):
    with pytest.raises(DaamlabError, match="attention.targets entry 'qkv' matches no linear layer"):
        build(compose, tmp_path, "tiny_beit", "attention.targets=[qkv]")
    with pytest.raises(DaamlabError, match="attention.r=0 must be a whole number >= 1"):
        build(compose, tmp_path, "tiny_beit", "attention.r=0")
    with pytest.raises(DaamlabError, match="gradient_checkpointing=true needs attention.train_mode=true"):
        build(
            compose,
            tmp_path,
            "tiny_beit",
            "attention.gradient_checkpointing=true",
            "attention.train_mode=false",
        )
    cfg = compose([*small("tiny_beit", "data.layers=[0]"), f"paths.cache_dir={tmp_path}"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
    with pytest.raises(DaamlabError, match="pooled last layer: leave data.layers=null"):
        train(cfg)


def test_wavlm_attention_runs_through_its_modules_with_the_same_numbers(compose):
    import numpy as np

    encoder = build_encoder(compose(small("tiny_wavlm")).encoder)
    waves = [
        np.random.default_rng(i).standard_normal(n).astype(np.float32) for i, n in enumerate([4000, 1200])
    ]
    before = encoder.encode(waves)  # padded batch: the key mask matters
    assert route_attention_through_modules(encoder.model) == 4  # one per layer
    torch.testing.assert_close(encoder.encode(waves), before, rtol=1e-5, atol=1e-6)


def test_adapters_that_never_run_are_refused(compose, tmp_path):
    _, dm, model = build(compose, tmp_path, "tiny_wavlm")
    for layer in model.encoder.model.encoder.layers:  # back to transformers' weight-reading attention
        del layer.attention.torch_multi_head_self_attention
    x, _ = next(iter(dm.train_dataloader()))
    with pytest.raises(DaamlabError, match="8 adapted modules never run in WavLMModel's forward"):
        model(x)


def test_gradient_checkpointing_recomputes_to_the_same_gradients(compose, tmp_path):
    """Checkpointing runs each encoder layer again in backward (less memory) and changes no number.
    Both runs start from one seed and the recomputation replays the RNG, so BEiT's stochastic depth
    draws alike."""
    grads, calls = {}, {}
    for checkpointing in (False, True):
        torch.manual_seed(0)
        _, dm, model = build(
            compose, tmp_path, "tiny_beit", f"attention.gradient_checkpointing={str(checkpointing).lower()}"
        )
        calls[checkpointing] = 0

        def counted(*_, key: bool = checkpointing) -> None:
            calls[key] += 1

        attention = model.encoder.model.layers[0].attention  # runs inside the checkpointed forward
        attention.register_forward_hook(counted)
        model.train()
        x, y = next(iter(dm.train_dataloader()))
        model.criterion(model(x), y).backward()
        grads[checkpointing] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert calls == {False: 1, True: 2}  # the forward, then the recomputation in backward
    assert grads[True].keys() == grads[False].keys() and any("lora_B" in n for n in grads[True])
    for name, g in grads[False].items():
        torch.testing.assert_close(grads[True][name], g, rtol=1e-5, atol=1e-7)


def test_bf16_lora_run_tracks_the_fp32_one(compose, tmp_path):
    """encoder.dtype=bf16 + trainer.precision=bf16-mixed (the large-encoder setting) trains, close to fp32."""
    metrics = {}
    for name, overrides in (("fp32", []), ("bf16", ["encoder.dtype=bf16", "trainer.precision=bf16-mixed"])):
        cfg = compose(
            [*small("tiny_beit", "trainer.max_epochs=2", *overrides), f"paths.cache_dir={tmp_path}"]
        )
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / name)
        metrics[name] = train(cfg)
    assert metrics["bf16"].status == "complete"
    assert metrics["bf16"].test["loss"] == pytest.approx(metrics["fp32"].test["loss"], abs=0.02)
    assert metrics["bf16"].test["loss"] != metrics["fp32"].test["loss"]  # it did run in bf16
