#!/usr/bin/env python3
"""Tests for scripts/convert_checkpoint.py.

Builds checkpoints with torch from the shipped model (models/rat-tiny-pystdlib) in the shapes the
upstream trainer writes, runs the converter on them as a subprocess (so exit codes and messages
are what a user sees), and checks the model folders it writes.

Usage: python scripts/test_convert_checkpoint.py   (exits non-zero when a case fails; needs torch
and safetensors)
"""

import json
import os
import subprocess
import sys
import tempfile
import traceback
import types

import torch
from safetensors.torch import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
CONVERTER = os.path.join(HERE, "convert_checkpoint.py")
SHIPPED = os.path.join(REPO, "models", "rat-tiny-pystdlib")
HEAD = "head.lm_head.weight"
WTE = "embedding.wte.weight"
FLAGS = ["--num-head", "4", "--d-head", "32", "--ngroups", "2", "--chunk-size", "16", "--max-seq-len", "4096"]


def shipped_tensors():
    return load_file(os.path.join(SHIPPED, "model.safetensors"))


def shipped_config():
    with open(os.path.join(SHIPPED, "config.json"), encoding="utf-8") as f:
        return json.load(f)


def tied_state_dict():
    """The shipped weights with the head sharing the embedding's storage, as nn.Module ties it."""
    sd = shipped_tensors()
    sd[HEAD] = sd[WTE]
    return sd


def compiled_names(sd):
    # torch.compile on the whole task gives a leading `_orig_mod.`; compiling the backbone on its
    # own puts one after `backbone.`. Use both, as a checkpoint may.
    out = {}
    for k, v in sd.items():
        if k.startswith("backbone.layers."):
            k = "backbone._orig_mod." + k[len("backbone."):]
        out["_orig_mod." + k] = v
    return out


def trainer_checkpoint(sd, config=None):
    return {
        "task": sd,
        "config": config if config is not None else {"trainer": {"lr": 1e-3, "steps": 10}},
        "step": 10,
        "optimizer": {"state": {0: {"exp_avg": torch.zeros(3)}}, "param_groups": [{"lr": 1e-3, "params": [0]}]},
        "lr_scheduler": {"last_epoch": 10},
        "resume_kwargs": {"epoch": 0},
    }


def run(ckpt, out, *flags):
    r = subprocess.run(
        [sys.executable, CONVERTER, ckpt, out, *flags], capture_output=True, text=True, check=False
    )
    return r.returncode, r.stdout + r.stderr


def convert_ok(ckpt, out, *flags):
    rc, text = run(ckpt, out, *flags)
    assert rc == 0, f"converter failed (exit {rc}):\n{text}"
    with open(os.path.join(out, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    return load_file(os.path.join(out, "model.safetensors")), cfg, text


def convert_fails(ckpt, out, must_name, *flags):
    rc, text = run(ckpt, out, *flags)
    assert rc != 0, f"converter should have failed naming {must_name!r} but exited 0:\n{text}"
    assert must_name in text, f"the error does not name {must_name!r}:\n{text}"
    assert not os.path.exists(os.path.join(out, "model.safetensors")), "a failed run left model.safetensors"
    return text


def assert_same_tensors(got, want):
    assert set(got) == set(want), f"names differ: extra {set(got) - set(want)}, missing {set(want) - set(got)}"
    for k in want:
        assert got[k].dtype == torch.float32, f"{k} is {got[k].dtype}"
        assert torch.equal(got[k], want[k].to(torch.float32)), f"{k} differs"


# --------------------------------------------------------------------------------------------


def case_trainer_checkpoint(tmp):
    """1. trainer dict, `_orig_mod.` names, tied head → shipped tensors minus the head, shipped config."""
    ckpt = os.path.join(tmp, "trainer.pt")
    torch.save(trainer_checkpoint(compiled_names(tied_state_dict())), ckpt)
    out = os.path.join(tmp, "out")
    got, cfg, text = convert_ok(ckpt, out, *FLAGS)
    want = shipped_tensors()
    assert HEAD not in got, "the tied head was kept"
    del want[HEAD]
    assert_same_tensors(got, want)
    assert cfg == shipped_config(), f"config differs:\n{json.dumps(cfg, indent=2)}"
    assert list(cfg) == list(shipped_config()), "config keys are not in the shipped order"
    assert "886,400" in text, f"summary does not count 886,400 parameters:\n{text}"

    # Refuse to overwrite, then overwrite with --force.
    rc, text = run(ckpt, out, *FLAGS)
    assert rc != 0 and "--force" in text, f"overwrote without --force:\n{text}"
    convert_ok(ckpt, out, *FLAGS, "--force")


def case_config_sources(tmp):
    """1b. the same keys from --config, and from the checkpoint's nested config; flags win."""
    ckpt = os.path.join(tmp, "trainer.pt")
    torch.save(trainer_checkpoint(tied_state_dict()), ckpt)
    got, cfg, _ = convert_ok(ckpt, os.path.join(tmp, "a"), "--config", os.path.join(SHIPPED, "config.json"))
    assert cfg == shipped_config(), f"--config: config differs:\n{json.dumps(cfg, indent=2)}"

    partial = os.path.join(tmp, "partial.json")
    with open(partial, "w", encoding="utf-8") as f:
        json.dump({"chunk_size": 64, "num_head": 4, "max_seq_len": 4096}, f)
    _, cfg, text = convert_ok(ckpt, os.path.join(tmp, "b"), "--config", partial, "--chunk-size", "16")
    assert cfg == shipped_config(), f"flag over --config: config differs:\n{json.dumps(cfg, indent=2)}"
    assert "(flag)" in text and "(--config)" in text, f"sources not printed:\n{text}"

    # A nested trainer config (as OmegaConf.to_container gives it) that is not a plain
    # dict at the top, so weights_only=True refuses it and the converter falls back.
    nested = types.SimpleNamespace(
        model={"backbone": {"seq_cell": {"d_head": 32, "chunk_size": 16, "ngroups": 2}, "d_model": 128}},
        data={"seq_len": 4096},
    )
    ckpt2 = os.path.join(tmp, "trainer_ns.pt")
    torch.save(trainer_checkpoint(tied_state_dict(), config=nested), ckpt2)
    _, cfg, text = convert_ok(ckpt2, os.path.join(tmp, "c"))
    assert cfg == shipped_config(), f"checkpoint config: config differs:\n{json.dumps(cfg, indent=2)}"
    assert "weights_only" in text, f"no note about the full-pickle fallback:\n{text}"
    assert "checkpoint config (model.backbone.seq_cell.chunk_size)" in text, f"source not printed:\n{text}"


def case_untied_head(tmp):
    """2. plain state_dict, head differs from the embedding → head kept, tie_embedding false."""
    sd = shipped_tensors()
    sd[HEAD] = sd[WTE].clone() + 0.25
    ckpt = os.path.join(tmp, "plain.pt")
    torch.save(sd, ckpt)
    got, cfg, _ = convert_ok(ckpt, os.path.join(tmp, "out"), *FLAGS)
    assert_same_tensors(got, sd)
    assert cfg["tie_embedding"] is False, cfg
    want = dict(shipped_config(), tie_embedding=False)
    assert cfg == want, f"config differs:\n{json.dumps(cfg, indent=2)}"

    # Equal values in separate storage still count as tied.
    sd[HEAD] = sd[WTE].clone()
    torch.save(sd, ckpt)
    got, cfg, _ = convert_ok(ckpt, os.path.join(tmp, "out2"), *FLAGS)
    assert HEAD not in got and cfg["tie_embedding"] is True, cfg


def case_bf16(tmp):
    """3. bf16 checkpoint → float32 output holding the bf16 values."""
    sd = {k: v.to(torch.bfloat16) for k, v in tied_state_dict().items() if k != HEAD}
    sd[HEAD] = sd[WTE]
    ckpt = os.path.join(tmp, "bf16.pt")
    torch.save(trainer_checkpoint(sd), ckpt)
    got, cfg, _ = convert_ok(ckpt, os.path.join(tmp, "out"), *FLAGS)
    del sd[HEAD]
    assert_same_tensors(got, sd)
    assert cfg == shipped_config(), cfg


def case_f16(tmp):
    """3b. --dtype f16 → float16 tensors (bf16 sources too), "dtype": "float16", half the file; out of range refused."""
    ckpt = os.path.join(tmp, "trainer.pt")
    torch.save(trainer_checkpoint(tied_state_dict()), ckpt)
    f32_dir, f16_dir = os.path.join(tmp, "f32"), os.path.join(tmp, "f16")
    convert_ok(ckpt, f32_dir, *FLAGS)
    got, cfg, text = convert_ok(ckpt, f16_dir, *FLAGS, "--dtype", "f16")
    want = shipped_tensors()
    del want[HEAD]
    assert set(got) == set(want), f"names differ: {set(got) ^ set(want)}"
    for k, v in want.items():
        assert got[k].dtype == torch.float16, f"{k} is {got[k].dtype}"
        assert torch.equal(got[k], v.to(torch.float16)), f"{k} differs from its float16 rounding"
    assert cfg == dict(shipped_config(), dtype="float16"), f"config differs:\n{json.dumps(cfg, indent=2)}"
    assert "(--dtype)" in text and "float16" in text, f"dtype not reported:\n{text}"
    size = lambda d: os.path.getsize(os.path.join(d, "model.safetensors"))  # noqa: E731
    assert size(f16_dir) < 0.51 * size(f32_dir), (size(f16_dir), size(f32_dir))

    # The default and an explicit f32 write the same file as before the option existed.
    got, cfg, _ = convert_ok(ckpt, os.path.join(tmp, "f32b"), *FLAGS, "--dtype", "f32")
    assert cfg == shipped_config() and "dtype" not in cfg, cfg
    assert_same_tensors(got, want)

    # bf16 weights are rounded to float16 once, straight from bf16.
    sd = {k: v.to(torch.bfloat16) for k, v in shipped_tensors().items() if k != HEAD}
    ckpt_bf16 = os.path.join(tmp, "bf16.pt")
    torch.save(trainer_checkpoint(sd), ckpt_bf16)
    got, _, _ = convert_ok(ckpt_bf16, os.path.join(tmp, "bf16"), *FLAGS, "--dtype", "f16")
    for k, v in sd.items():
        assert got[k].dtype == torch.float16 and torch.equal(got[k], v.to(torch.float16)), k

    # A weight float16 cannot hold is named, and nothing is written.
    sd = tied_state_dict()
    name = "backbone.layers.2.hidden_layer.fc1.weight"
    sd[name] = sd[name].clone()
    sd[name][3, 5] = 1e6
    ckpt_big = os.path.join(tmp, "big.pt")
    torch.save(trainer_checkpoint(sd), ckpt_big)
    text = convert_fails(ckpt_big, os.path.join(tmp, "big"), name, *FLAGS, "--dtype", "f16")
    assert "65504" in text and "--dtype f32" in text, text
    convert_ok(ckpt_big, os.path.join(tmp, "big32"), *FLAGS)
    # Only the choices are accepted.
    rc, text = run(ckpt, os.path.join(tmp, "bad"), *FLAGS, "--dtype", "int8")
    assert rc != 0 and "--dtype" in text, text


def hybrid_state_dict(rat_layers):
    sd = tied_state_dict()
    d = sd[WTE].shape[1]
    for i in range(4):
        if i not in rat_layers:
            pre = f"backbone.layers.{i}.seq_layer."
            del sd[pre + "gate_bias"]
            sd[pre + "in_proj.weight"] = sd[pre + "in_proj.weight"][: 3 * d].clone()
    return sd


def case_hybrid(tmp):
    """4. odd layers as sliding-window attention → hybrid, interleave_step 2, needs --window-size."""
    sd = hybrid_state_dict({0, 2})
    ckpt = os.path.join(tmp, "hybrid.pt")
    torch.save(trainer_checkpoint(sd), ckpt)
    convert_fails(ckpt, os.path.join(tmp, "no_window"), "window_size", *FLAGS)
    got, cfg, _ = convert_ok(ckpt, os.path.join(tmp, "out"), *FLAGS, "--window-size", "64")
    assert cfg["model_kind"] == "hybrid" and cfg["interleave_step"] == 2 and cfg["window_size"] == 64, cfg
    want = dict(shipped_config(), model_kind="hybrid", interleave_step=2, window_size=64)
    assert cfg == want, f"config differs:\n{json.dumps(cfg, indent=2)}"
    del sd[HEAD]
    assert_same_tensors(got, sd)

    # A layout that no interleave_step gives is refused.
    ckpt2 = os.path.join(tmp, "bad_hybrid.pt")
    torch.save(hybrid_state_dict({0, 1}), ckpt2)
    convert_fails(ckpt2, os.path.join(tmp, "bad"), "interleave_step", *FLAGS, "--window-size", "64")

    # No RAT layer at all: attention, with neither chunk_size nor ngroups needed.
    ckpt3 = os.path.join(tmp, "attention.pt")
    torch.save(hybrid_state_dict(set()), ckpt3)
    _, cfg, _ = convert_ok(ckpt3, os.path.join(tmp, "attn"), "--num-head", "4", "--max-seq-len", "4096")
    assert cfg["model_kind"] == "attention" and cfg["interleave_step"] is None, cfg


def case_refusals(tmp):
    """5. missing chunk_size, an unknown tensor name, inconsistent heads → non-zero exit naming it."""
    ckpt = os.path.join(tmp, "trainer.pt")
    torch.save(trainer_checkpoint(tied_state_dict()), ckpt)
    no_chunk = [f for f in FLAGS if f not in ("--chunk-size", "16")]
    convert_fails(ckpt, os.path.join(tmp, "a"), "chunk_size", *no_chunk)
    convert_fails(ckpt, os.path.join(tmp, "b"), "d_head", *FLAGS[:2], "--d-head", "16", *FLAGS[4:])
    convert_fails(ckpt, os.path.join(tmp, "c"), "ngroups", *FLAGS[:4], "--ngroups", "1", *FLAGS[6:])

    sd = tied_state_dict()
    sd["backbone.layers.1.seq_layer.mystery_weight"] = torch.ones(3)
    ckpt2 = os.path.join(tmp, "unknown.pt")
    torch.save(compiled_names(sd), ckpt2)
    convert_fails(ckpt2, os.path.join(tmp, "d"), "backbone.layers.1.seq_layer.mystery_weight", *FLAGS)
    got, _, _ = convert_ok(ckpt2, os.path.join(tmp, "e"), *FLAGS, "--keep-unknown")
    assert torch.equal(got["backbone.layers.1.seq_layer.mystery_weight"], torch.ones(3))


CASES = [
    case_trainer_checkpoint, case_config_sources, case_untied_head, case_bf16, case_f16, case_hybrid,
    case_refusals,
]


def main():
    failed = 0
    for case in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                case(tmp)
                print(f"PASS {case.__name__}: {case.__doc__.splitlines()[0]}")
            except Exception:  # noqa: BLE001 - report every case, then fail
                failed += 1
                print(f"FAIL {case.__name__}: {case.__doc__.splitlines()[0]}")
                traceback.print_exc()
    print(f"{len(CASES) - failed}/{len(CASES)} cases passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
