#!/usr/bin/env python3
"""Convert a reference RAT training checkpoint into a chunkwise model folder.

The upstream trainer (CLAIRE-Labo/RAT) saves, with ``torch.save``, a dict with the keys ``task`` (the
language model's state_dict), ``config``, ``step``, ``optimizer``, ``lr_scheduler`` and
``resume_kwargs``. A file holding a plain state_dict is accepted too. This script writes
``OUT_DIR/model.safetensors`` (every floating-point tensor float32, or float16 with ``--dtype f16``,
under the upstream names, ``_orig_mod.`` segments from torch.compile removed, the tied head dropped)
and ``OUT_DIR/config.json`` in the model-folder format that ``chunkwise`` reads (see
models/rat-tiny-pystdlib/config.json; with ``--dtype f16`` it also says ``"dtype": "float16"``).

What the tensor shapes determine (vocab_size, d_model, num_layers, d_ffn, ffn_bias, model_kind,
interleave_step, tie_embedding and, for RAT layers, 2·ngroups·d_head) is inferred. The rest comes
from flags, then from ``--config FILE.json`` (any subset of the config keys), then from the
checkpoint's own ``config`` entry (looked up by the same key names at any depth), then from
defaults (rope_base 10000, norm_eps 1e-6, act_fn gelu, tokenizer bytes for vocab 256,
d_head = d_model / num_head). The source of every key is printed.

Usage:
    python scripts/convert_checkpoint.py CKPT.pt OUT_DIR --num-head 4 --d-head 32 --ngroups 2 \\
        --chunk-size 16 --max-seq-len 4096 [--window-size W] [--config FILE.json] \\
        [--dtype f16] [--keep-unknown] [--force]

``--dtype f16`` halves the file (a 1.3B model: 2.6 GB instead of 5.2 GB); chunkwise accumulates in
f32 either way. A tensor with values beyond float16's range (|x| > 65504) is refused by name rather
than written as infinities.

Loading a pickle can run arbitrary code: only convert checkpoints you trust. The file is first
loaded with ``weights_only=True``; only if that fails (for instance because ``config`` is an
OmegaConf object) is it loaded again as a full pickle, with a note.

Requires torch and safetensors (``pip install torch safetensors``).
"""

import argparse
import json
import math
import os
import re
import sys

# chunkwise reads exactly these keys; the order matches the shipped config.json so that the
# written file diffs cleanly against it.
CONFIG_KEYS = [
    "model_kind",
    "vocab_size",
    "d_model",
    "num_layers",
    "num_head",
    "d_head",
    "ngroups",
    "chunk_size",
    "window_size",
    "interleave_step",
    "d_ffn",
    "act_fn",
    "ffn_bias",
    "norm_eps",
    "tie_embedding",
    "rope_base",
    "max_seq_len",
    "tokenizer",
]
INT_KEYS = {
    "vocab_size", "d_model", "num_layers", "num_head", "d_head", "ngroups", "chunk_size",
    "window_size", "interleave_step", "d_ffn", "max_seq_len",
}
FLOAT_KEYS = {"norm_eps", "rope_base"}
BOOL_KEYS = {"ffn_bias", "tie_embedding"}
STR_KEYS = {"model_kind", "act_fn", "tokenizer"}
# Decided by the tensors alone; a user-given value may only confirm them.
SHAPE_KEYS = [
    "model_kind", "vocab_size", "d_model", "num_layers", "d_ffn", "ffn_bias", "tie_embedding",
    "interleave_step",
]

# --dtype: (torch dtype name, the value config.json gets, or None to write no dtype key).
DTYPES = {
    "f32": ("float32", None),
    "float32": ("float32", None),
    "f16": ("float16", "float16"),
    "float16": ("float16", "float16"),
}

WTE = "embedding.wte.weight"
HEAD = "head.lm_head.weight"
FINAL_LN = "backbone.ln.weight"
LAYER_RE = re.compile(r"^backbone\.layers\.(\d+)\.(seq_layer|hidden_layer)\.(.+)$")
SEQ_NAMES = {"in_proj.weight", "gate_bias", "input_norm.weight", "out_proj.weight"}
HIDDEN_NAMES = {"fc1.weight", "fc2.weight", "ln.weight", "fc1.bias", "fc2.bias"}


class ConvertError(Exception):
    pass


def note(msg):
    print(f"note: {msg}")


# ---------------------------------------------------------------------------------------------
# Loading


def load_checkpoint(path):
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure of the safe loader means "try the full one"
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        note(
            "weights_only=True could not load the file "
            f"({first_line}); loading it as a full pickle, which runs code from the file: "
            "only convert checkpoints you trust"
        )
        return torch.load(path, map_location="cpu", weights_only=False)


def is_tensor(x):
    import torch

    return isinstance(x, torch.Tensor)


def split_checkpoint(obj):
    """Returns (state_dict, checkpoint config or None)."""
    if not isinstance(obj, dict):
        raise ConvertError(
            f"the checkpoint is a {type(obj).__name__}, not a dict (a trainer checkpoint with a "
            "'task' entry, or a state_dict)"
        )
    if "task" in obj:
        sd = obj["task"]
        if not isinstance(sd, dict):
            raise ConvertError(f"the checkpoint's 'task' entry is a {type(sd).__name__}, not a state_dict")
        return sd, obj.get("config")
    non_tensors = [k for k, v in obj.items() if not is_tensor(v)]
    if non_tensors:
        raise ConvertError(
            "the checkpoint has no 'task' entry and is not a plain state_dict; entries that are "
            f"not tensors: {', '.join(map(str, non_tensors[:20]))}"
        )
    return obj, None


def strip_orig_mod(sd):
    # torch.compile wraps modules in an OptimizedModule whose parameters appear under an extra
    # `_orig_mod` segment, at the top or below whichever submodule was compiled.
    out = {}
    for k, v in sd.items():
        name = ".".join(p for p in str(k).split(".") if p != "_orig_mod")
        if name in out:
            raise ConvertError(f"two tensors map to '{name}' once '_orig_mod.' is removed")
        out[name] = v
    return out


# ---------------------------------------------------------------------------------------------
# Checkpoint config lookup


def config_to_plain(cfg):
    if cfg is None:
        return None
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(cfg, (DictConfig, ListConfig)):
            try:
                return OmegaConf.to_container(cfg, resolve=True)
            except Exception:  # noqa: BLE001 - an interpolation that cannot resolve here
                return OmegaConf.to_container(cfg, resolve=False)
    except ImportError:
        pass
    if isinstance(cfg, dict):
        return cfg
    if hasattr(cfg, "__dict__"):  # argparse.Namespace and similar
        return dict(vars(cfg))
    return None


def collect_leaves(tree, key, found, path=""):
    if isinstance(tree, dict):
        for k, v in tree.items():
            p = f"{path}.{k}" if path else str(k)
            if k == key and not isinstance(v, (dict, list, tuple)):
                found.append((p, v))
            collect_leaves(v, key, found, p)
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            collect_leaves(v, key, found, f"{path}[{i}]")


def lookup_ckpt_config(tree, key):
    """(value, where) when the key occurs with one value in the nested config, else None."""
    if tree is None:
        return None
    found = []
    collect_leaves(tree, key, found)
    # An unresolved interpolation or a null says nothing about the value.
    found = [(p, v) for p, v in found if v is not None and not (isinstance(v, str) and "${" in v)]
    if not found:
        return None
    values = {json.dumps(v, sort_keys=True, default=str) for _, v in found}
    if len(values) > 1:
        note(
            f"checkpoint config has several values for '{key}' "
            f"({', '.join(f'{p}={v}' for p, v in found)}); not using any"
        )
        return None
    return found[0][1], found[0][0]


# ---------------------------------------------------------------------------------------------
# Shape inference


def analyse(sd, keep_unknown):
    """Checks the names and shapes; returns the facts the tensors determine."""
    import torch

    unknown, non_float, layers = [], [], {}
    for name, t in sd.items():
        if not is_tensor(t):
            raise ConvertError(f"'{name}' is a {type(t).__name__}, not a tensor")
        m = LAYER_RE.match(name)
        if name in (WTE, HEAD, FINAL_LN):
            known = True
        elif m:
            sub = SEQ_NAMES if m.group(2) == "seq_layer" else HIDDEN_NAMES
            known = m.group(3) in sub
            if known:
                layers.setdefault(int(m.group(1)), {})[f"{m.group(2)}.{m.group(3)}"] = t
        else:
            known = False
        if not known:
            unknown.append(name)
        elif not torch.is_floating_point(t):
            non_float.append(f"{name} ({t.dtype})")
    problems = []
    if non_float:
        # A known weight that is not floating point means the file is not what we think it is,
        # so --keep-unknown does not excuse it.
        problems.append("these weights are not floating point: " + ", ".join(sorted(non_float)))
    if unknown and not keep_unknown:
        listed = [n if torch.is_floating_point(sd[n]) else f"{n} ({sd[n].dtype})" for n in sorted(unknown)]
        problems.append("unknown tensor names (pass --keep-unknown to copy them through): " + ", ".join(listed))
    if problems:
        raise ConvertError("; ".join(problems))
    for name in (WTE, FINAL_LN):
        if name not in sd:
            raise ConvertError(f"missing tensor '{name}'")

    wte = sd[WTE]
    if wte.dim() != 2:
        raise ConvertError(f"'{WTE}' has shape {list(wte.shape)}, expected [V, D]")
    vocab, d = wte.shape
    n = len(layers)
    if n == 0:
        raise ConvertError("no backbone.layers.{i}.* tensors")
    if sorted(layers) != list(range(n)):
        raise ConvertError(f"layer indices are not 0..{n - 1}: {sorted(layers)}")

    def want(name, t, shape):
        if list(t.shape) != list(shape):
            raise ConvertError(f"'{name}' has shape {list(t.shape)}, expected {list(shape)}")

    want(FINAL_LN, sd[FINAL_LN], [d])
    if HEAD in sd:
        want(HEAD, sd[HEAD], [vocab, d])

    rat_layers, extra_rows, d_ffn, ffn_bias = [], None, None, None
    for i in range(n):
        L = layers[i]
        pre = f"backbone.layers.{i}."
        for req in ("seq_layer.in_proj.weight", "seq_layer.input_norm.weight", "seq_layer.out_proj.weight",
                    "hidden_layer.fc1.weight", "hidden_layer.fc2.weight", "hidden_layer.ln.weight"):
            if req not in L:
                raise ConvertError(f"missing tensor '{pre}{req}'")
        in_proj = L["seq_layer.in_proj.weight"]
        if in_proj.dim() != 2 or in_proj.shape[1] != d or in_proj.shape[0] < 3 * d:
            raise ConvertError(
                f"'{pre}seq_layer.in_proj.weight' has shape {list(in_proj.shape)}, expected [3D + 2·G·dh, D] "
                f"or [3D, D] with D = {d}"
            )
        extra = in_proj.shape[0] - 3 * d
        has_gate = "seq_layer.gate_bias" in L
        if has_gate != (extra > 0):
            # RAT layers have both; attention layers have neither. Anything else is a layer we
            # do not know how to run.
            raise ConvertError(
                f"layer {i}: in_proj has {in_proj.shape[0]} rows (3D = {3 * d}) but gate_bias is "
                f"{'present' if has_gate else 'absent'}; a RAT layer has both extra rows and gate_bias, "
                "an attention layer neither"
            )
        if has_gate:
            rat_layers.append(i)
            want(f"{pre}seq_layer.gate_bias", L["seq_layer.gate_bias"], [d])
            if extra_rows is None:
                extra_rows = extra
            elif extra != extra_rows:
                raise ConvertError(
                    f"RAT layers disagree on in_proj rows: layer {i} has {extra} beyond 3D, earlier ones {extra_rows}"
                )
        want(f"{pre}seq_layer.input_norm.weight", L["seq_layer.input_norm.weight"], [d])
        want(f"{pre}seq_layer.out_proj.weight", L["seq_layer.out_proj.weight"], [d, d])
        fc1 = L["hidden_layer.fc1.weight"]
        if fc1.dim() != 2 or fc1.shape[1] != d:
            raise ConvertError(f"'{pre}hidden_layer.fc1.weight' has shape {list(fc1.shape)}, expected [d_ffn, {d}]")
        if d_ffn is None:
            d_ffn = fc1.shape[0]
        elif fc1.shape[0] != d_ffn:
            raise ConvertError(f"layers disagree on d_ffn: layer {i} has {fc1.shape[0]}, earlier ones {d_ffn}")
        want(f"{pre}hidden_layer.fc2.weight", L["hidden_layer.fc2.weight"], [d, d_ffn])
        want(f"{pre}hidden_layer.ln.weight", L["hidden_layer.ln.weight"], [d])
        b1, b2 = "hidden_layer.fc1.bias" in L, "hidden_layer.fc2.bias" in L
        if ffn_bias is None:
            ffn_bias = b1
        if b1 != ffn_bias or b2 != ffn_bias:
            raise ConvertError(f"layer {i}: FFN biases are not present in every layer for both fc1 and fc2")
        if b1:
            want(f"{pre}hidden_layer.fc1.bias", L["hidden_layer.fc1.bias"], [d_ffn])
            want(f"{pre}hidden_layer.fc2.bias", L["hidden_layer.fc2.bias"], [d])

    interleave = None
    if len(rat_layers) == n:
        kind = "rat"
    elif not rat_layers:
        kind = "attention"
    else:
        kind = "hybrid"
        if rat_layers[0] != 0:
            raise ConvertError(
                f"RAT layers {rat_layers} do not fit a hybrid model (layer i is RAT when "
                "i % interleave_step == 0, so layer 0 must be RAT)"
            )
        # With only layer 0 RAT any step >= num_layers fits; num_layers is the smallest.
        interleave = rat_layers[1] if len(rat_layers) > 1 else n
        expect = [i for i in range(n) if i % interleave == 0]
        if expect != rat_layers:
            raise ConvertError(
                f"RAT layers {rat_layers} do not fit a hybrid model with interleave_step {interleave} "
                f"(which would make layers {expect} RAT)"
            )

    return {
        "vocab_size": int(vocab),
        "d_model": int(d),
        "num_layers": n,
        "d_ffn": int(d_ffn),
        "ffn_bias": bool(ffn_bias),
        "model_kind": kind,
        "interleave_step": interleave,
        "rat_extra_rows": extra_rows,
        "rat_layers": rat_layers,
        "unknown": unknown,
    }


def head_is_tied(sd):
    import torch

    if HEAD not in sd:
        return True
    wte, head = sd[WTE], sd[HEAD]
    same_view = (
        wte.untyped_storage().data_ptr() == head.untyped_storage().data_ptr()
        and wte.storage_offset() == head.storage_offset()
        and wte.shape == head.shape
        and wte.stride() == head.stride()
        and wte.dtype == head.dtype
    )
    return same_view or (wte.shape == head.shape and torch.equal(wte, head))


# ---------------------------------------------------------------------------------------------
# Config resolution


def coerce(key, value, source):
    """Checks the type of a user-given value; None means 'not given'."""
    if value is None:
        return None
    bad = ConvertError(f"'{key}' from {source} is {value!r}, which is not a valid {key}")
    if key in INT_KEYS:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or value <= 0:
            raise bad
        return value
    if key in FLOAT_KEYS:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise bad
        # rope_base is conventionally an integer (10000); keep it one so the JSON reads as usual.
        if key == "rope_base" and float(value).is_integer():
            return int(value)
        return float(value)
    if key in BOOL_KEYS:
        if not isinstance(value, bool):
            raise bad
        return value
    if key in STR_KEYS:
        if not isinstance(value, str):
            raise bad
        return value
    raise bad


def resolve_config(facts, tied, flags, file_cfg, ckpt_cfg):
    d = facts["d_model"]
    kind = facts["model_kind"]
    cfg, source = {}, {}

    def given(key):
        """First user-given value of key: flags, then --config, then the checkpoint's config."""
        if flags.get(key) is not None:
            return coerce(key, flags[key], "the command line"), "flag"
        if file_cfg is not None and file_cfg.get(key) is not None:
            return coerce(key, file_cfg[key], "--config"), "--config"
        hit = lookup_ckpt_config(ckpt_cfg, key)
        if hit is None and key == "max_seq_len":
            # The trainer names its training length seq_len; chunkwise accepts it as an alias too.
            hit = lookup_ckpt_config(ckpt_cfg, "seq_len")
        if hit is not None:
            try:
                return coerce(key, hit[0], f"the checkpoint config ({hit[1]})"), f"checkpoint config ({hit[1]})"
            except ConvertError as e:
                note(f"{e}; ignoring it")
        return None, None

    inferred = dict(facts)
    inferred["tie_embedding"] = tied
    for key in SHAPE_KEYS:
        value, src = given(key)
        want = inferred[key]
        if key == "interleave_step" and kind != "hybrid":
            if value is not None:
                note(f"interleave_step {value} ({src}) is not used by a {kind} model; writing null")
            value = None
        if value is not None and value != want:
            msg = f"'{key}' from {src} is {value!r} but the tensors say {want!r}"
            if src.startswith("checkpoint config"):
                note(msg + "; using the tensors")
            else:
                raise ConvertError(msg)
        cfg[key] = want
        source[key] = "tensors"
    if kind != "hybrid":
        source["interleave_step"] = "not used"

    for key in ("num_head", "d_head", "ngroups", "chunk_size", "window_size", "max_seq_len",
                "rope_base", "norm_eps", "act_fn", "tokenizer"):
        cfg[key], source[key] = given(key)

    # Heads: either number determines the other.
    if cfg["num_head"] is None and cfg["d_head"] is not None and d % cfg["d_head"] == 0:
        cfg["num_head"], source["num_head"] = d // cfg["d_head"], "d_model / d_head"
    if cfg["num_head"] is None:
        raise ConvertError("missing 'num_head' (pass --num-head, or --d-head)")
    if cfg["d_head"] is None:
        if d % cfg["num_head"]:
            raise ConvertError(f"d_model {d} is not divisible by num_head {cfg['num_head']}; pass --d-head")
        cfg["d_head"], source["d_head"] = d // cfg["num_head"], "d_model / num_head"
    if cfg["num_head"] * cfg["d_head"] != d:
        raise ConvertError(
            f"inconsistent 'num_head'/'d_head': num_head {cfg['num_head']} × d_head {cfg['d_head']} "
            f"≠ d_model {d}"
        )

    extra = facts["rat_extra_rows"]
    if kind in ("rat", "hybrid"):
        if cfg["ngroups"] is None:
            if extra % (2 * cfg["d_head"]):
                raise ConvertError(
                    f"missing 'ngroups', and in_proj's {extra} extra rows are not a multiple of 2·d_head "
                    f"= {2 * cfg['d_head']}"
                )
            cfg["ngroups"], source["ngroups"] = extra // (2 * cfg["d_head"]), "tensors (in_proj rows)"
        if 2 * cfg["ngroups"] * cfg["d_head"] != extra:
            raise ConvertError(
                f"inconsistent 'ngroups'/'d_head': in_proj of the RAT layers has {extra} rows beyond 3·d_model, "
                f"but 2 × ngroups {cfg['ngroups']} × d_head {cfg['d_head']} = {2 * cfg['ngroups'] * cfg['d_head']}"
            )
        if cfg["num_head"] % cfg["ngroups"]:
            raise ConvertError(
                f"inconsistent 'ngroups': num_head {cfg['num_head']} is not a multiple of ngroups {cfg['ngroups']}"
            )
        if cfg["chunk_size"] is None:
            raise ConvertError(f"missing 'chunk_size' (pass --chunk-size): a {kind} model needs it")
    if kind == "hybrid" and cfg["window_size"] is None:
        raise ConvertError("missing 'window_size' (pass --window-size): a hybrid model needs it")
    if kind != "hybrid" and cfg["window_size"] is not None:
        # Only the hybrid stack has sliding-window layers; a value elsewhere would mislead.
        note(f"window_size {cfg['window_size']} ({source['window_size']}) is not used by a {kind} model; writing null")
        cfg["window_size"], source["window_size"] = None, "not used"
    if cfg["max_seq_len"] is None:
        raise ConvertError("missing 'max_seq_len' (pass --max-seq-len): it sizes the RoPE tables")

    defaults = {"rope_base": 10000, "norm_eps": 1e-6, "act_fn": "gelu"}
    for key, value in defaults.items():
        if cfg[key] is None:
            cfg[key], source[key] = value, "default"
    if cfg["act_fn"] != "gelu":
        note(f"act_fn is '{cfg['act_fn']}'; chunkwise runs the GELU FFN of the reference models")
    if cfg["tokenizer"] is None:
        if facts["vocab_size"] == 256:
            cfg["tokenizer"], source["tokenizer"] = "bytes", "default (vocab 256)"
        else:
            source["tokenizer"] = "unknown (no --tokenizer)"
    for key in ("ngroups", "chunk_size"):
        if cfg[key] is None:
            source[key] = "not used"

    return {k: cfg[k] for k in CONFIG_KEYS}, source


# ---------------------------------------------------------------------------------------------
# Main


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Convert a reference RAT checkpoint (torch pickle) into a chunkwise model folder.",
        epilog="Only convert checkpoints you trust: loading a pickle can run code.",
    )
    p.add_argument("checkpoint", help="file written by torch.save (trainer checkpoint or state_dict)")
    p.add_argument("out_dir", help="model folder to create (model.safetensors + config.json)")
    p.add_argument("--config", dest="config_file", metavar="FILE.json",
                   help="JSON object with any subset of the config.json keys (flags win over it)")
    p.add_argument("--num-head", type=int)
    p.add_argument("--d-head", type=int)
    p.add_argument("--ngroups", type=int)
    p.add_argument("--chunk-size", type=int)
    p.add_argument("--window-size", type=int)
    p.add_argument("--max-seq-len", type=int)
    p.add_argument("--rope-base", type=float)
    p.add_argument("--norm-eps", type=float)
    p.add_argument("--act-fn")
    p.add_argument("--tokenizer")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="f32",
                   help="storage of the floating-point tensors in model.safetensors (default f32; "
                        "f16 halves the file)")
    p.add_argument("--keep-unknown", action="store_true",
                   help="copy tensors with unknown names through instead of refusing")
    p.add_argument("--force", action="store_true", help="overwrite an existing model.safetensors")
    return p.parse_args(argv)


def convert(args):
    import torch

    try:
        from safetensors.torch import save_file
    except ImportError:
        raise ConvertError("the 'safetensors' package is missing: pip install safetensors") from None

    out_model = os.path.join(args.out_dir, "model.safetensors")
    out_config = os.path.join(args.out_dir, "config.json")
    if os.path.exists(out_model) and not args.force:
        raise ConvertError(f"{out_model} exists; pass --force to overwrite it")

    file_cfg = None
    if args.config_file:
        try:
            with open(args.config_file, encoding="utf-8") as f:
                file_cfg = json.load(f)
        except (OSError, ValueError) as e:
            raise ConvertError(f"cannot read --config {args.config_file}: {e}") from None
        if not isinstance(file_cfg, dict):
            raise ConvertError(f"--config {args.config_file} is not a JSON object")
        for k in sorted(set(file_cfg) - set(CONFIG_KEYS)):
            note(f"--config: ignoring unknown key '{k}'")

    if not os.path.isfile(args.checkpoint):
        raise ConvertError(f"no such file: {args.checkpoint}")
    obj = load_checkpoint(args.checkpoint)
    sd, ckpt_cfg = split_checkpoint(obj)
    sd = strip_orig_mod(sd)
    ckpt_cfg = config_to_plain(ckpt_cfg)

    facts = analyse(sd, args.keep_unknown)
    tied = head_is_tied(sd)
    flags = {
        "num_head": args.num_head, "d_head": args.d_head, "ngroups": args.ngroups,
        "chunk_size": args.chunk_size, "window_size": args.window_size, "max_seq_len": args.max_seq_len,
        "rope_base": args.rope_base, "norm_eps": args.norm_eps, "act_fn": args.act_fn,
        "tokenizer": args.tokenizer,
    }
    cfg, source = resolve_config(facts, tied, flags, file_cfg, ckpt_cfg)
    torch_name, cfg_dtype = DTYPES[args.dtype]
    store = getattr(torch, torch_name)
    if cfg_dtype is not None:
        # The loader then knows the file was meant to be run in f16 without being told again.
        cfg["dtype"], source["dtype"] = cfg_dtype, "--dtype"

    tensors, seen = {}, set()
    for name, t in sd.items():
        if name == HEAD and tied:
            continue  # chunkwise ties a missing head to the embedding
        t = t.detach()
        if torch.is_floating_point(t):
            stored = t.to(store)
            # float16 tops out at 65504: a larger weight would be written as an infinity and
            # poison every logit downstream, so name it instead.
            if store == torch.float16 and not torch.equal(
                torch.isfinite(stored), torch.isfinite(t)
            ):
                big = t.detach().abs().float().max().item()
                raise ConvertError(
                    f"'{name}' has values beyond float16's range (largest |x| = {big:g}, float16 "
                    "holds up to 65504); convert it with --dtype f32"
                )
            t = stored
        t = t.contiguous()
        # safetensors refuses tensors that share memory (e.g. an untied head still aliasing
        # the embedding's storage after a no-op dtype conversion).
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen:
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        tensors[name] = t

    os.makedirs(args.out_dir, exist_ok=True)
    # Write beside the target and rename, so a failed run never leaves a truncated model behind.
    tmp_model, tmp_config = out_model + ".tmp", out_config + ".tmp"
    save_file(tensors, tmp_model, metadata={"format": "pt"})
    with open(tmp_config, "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    os.replace(tmp_model, out_model)
    os.replace(tmp_config, out_config)

    print("config.json:")
    for k in cfg:
        print(f"  {k:16} = {json.dumps(cfg[k]):10}  ({source[k]})")
    params = sum(t.numel() for t in tensors.values())
    if cfg["model_kind"] == "hybrid":
        layout = f"{len(facts['rat_layers'])} RAT + {cfg['num_layers'] - len(facts['rat_layers'])} sliding-window"
    else:
        layout = f"{cfg['num_layers']} {cfg['model_kind']}"
    head = "tied to the embedding (head dropped)" if tied else "untied (head kept)"
    print(
        f"wrote {args.out_dir}: {cfg['model_kind']}, {cfg['num_layers']} layers ({layout}), "
        f"{params:,} parameters in {len(tensors)} tensors ({torch_name}), head {head}"
    )
    if facts["unknown"]:
        print(f"kept {len(facts['unknown'])} unknown tensors: {', '.join(sorted(facts['unknown']))}")


def main(argv=None):
    args = parse_args(argv)
    try:
        import torch  # noqa: F401
    except ImportError:
        print("error: torch is needed to read the checkpoint: pip install torch", file=sys.stderr)
        return 2
    try:
        convert(args)
    except ConvertError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
