"""A LLaVA-shaped checkpoint at a measurable size, and the baseline loader, for
`cargo bench -p mllm --bench load` (docs/scale.md). Test-only; not run by scripts/test.sh.

  $AMP_PYTHON tests/oracles/scale_checkpoint.py make DIR
      writes DIR/{config.json, model.safetensors.index.json, model-0000N-of-0000M.safetensors}:
      random bf16 weights (seed 0) of LLaVA-1.5's vision tower (CLIP ViT-L/14-336: 24 x 1024,
      576 image tokens) and projector, and an 8-layer LLaMA of width 2048 with vocab 32000
      (~846M parameters, ~1.69 GB), in transformers 5 key spelling, sharded at ~450 MB.
  $AMP_PYTHON tests/oracles/scale_checkpoint.py load DIR bf16|bf16-copy|f32
      loads every shard with safetensors.torch.load_file and prints one JSON line: seconds, peak
      RssAnon (sampled every 2 ms) and the model's bytes in that dtype. `bf16`: load_file alone,
      whose tensors stay backed by the mapped file (nothing is read until used); `bf16-copy`:
      each tensor cloned into process memory as it is read (what a model that owns its weights
      holds); `f32`: each tensor converted with .float() as it is read, the bf16 view dropped.
"""
import json, os, sys, threading, time

import torch


def text_cfg():
    return dict(vocab_size=32000, hidden_size=2048, intermediate_size=5504, num_hidden_layers=8,
                num_attention_heads=16, num_key_value_heads=16, max_position_embeddings=4096,
                rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False, hidden_act="silu",
                bos_token_id=1, eos_token_id=2, pad_token_id=0, model_type="llama")


def vision_cfg():
    return dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                image_size=336, patch_size=14, num_channels=3, hidden_act="quick_gelu", layer_norm_eps=1e-5,
                projection_dim=768, model_type="clip_vision_model")


def shapes():
    t, v = text_cfg(), vision_cfg()
    out = []
    d, n = v["hidden_size"], (v["image_size"] // v["patch_size"]) ** 2 + 1
    vp = "model.vision_tower.vision_model."
    out += [(vp + "embeddings.class_embedding", [d]),
            (vp + "embeddings.patch_embedding.weight", [d, 3, v["patch_size"], v["patch_size"]]),
            (vp + "embeddings.position_embedding.weight", [n, d]),
            (vp + "pre_layrnorm.weight", [d]), (vp + "pre_layrnorm.bias", [d]),
            (vp + "post_layernorm.weight", [d]), (vp + "post_layernorm.bias", [d])]
    for i in range(v["num_hidden_layers"]):
        p = f"{vp}encoder.layers.{i}."
        for m in ["q_proj", "k_proj", "v_proj", "out_proj"]:
            out += [(p + f"self_attn.{m}.weight", [d, d]), (p + f"self_attn.{m}.bias", [d])]
        out += [(p + "mlp.fc1.weight", [v["intermediate_size"], d]), (p + "mlp.fc1.bias", [v["intermediate_size"]]),
                (p + "mlp.fc2.weight", [d, v["intermediate_size"]]), (p + "mlp.fc2.bias", [d])]
        for ln in ["layer_norm1", "layer_norm2"]:
            out += [(p + f"{ln}.weight", [d]), (p + f"{ln}.bias", [d])]
    h, it = t["hidden_size"], t["intermediate_size"]
    out += [("model.multi_modal_projector.linear_1.weight", [h, d]), ("model.multi_modal_projector.linear_1.bias", [h]),
            ("model.multi_modal_projector.linear_2.weight", [h, h]), ("model.multi_modal_projector.linear_2.bias", [h])]
    lp = "model.language_model."
    out += [(lp + "embed_tokens.weight", [t["vocab_size"], h]), (lp + "norm.weight", [h]),
            ("lm_head.weight", [t["vocab_size"], h])]
    for i in range(t["num_hidden_layers"]):
        p = f"{lp}layers.{i}."
        for m in ["q_proj", "k_proj", "v_proj", "o_proj"]:
            out.append((p + f"self_attn.{m}.weight", [h, h]))
        out += [(p + "mlp.gate_proj.weight", [it, h]), (p + "mlp.up_proj.weight", [it, h]),
                (p + "mlp.down_proj.weight", [h, it]),
                (p + "input_layernorm.weight", [h]), (p + "post_attention_layernorm.weight", [h])]
    return out


def make(d, shard_bytes=450_000_000):
    from safetensors.torch import save_file
    os.makedirs(d, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    shards, cur, size = [], [], 0
    for name, shape in shapes():
        numel = 1
        for s in shape:
            numel *= s
        if cur and size + 2 * numel > shard_bytes:
            shards.append(cur); cur, size = [], 0
        cur.append((name, shape)); size += 2 * numel
    shards.append(cur)
    weight_map, total = {}, 0
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        tensors = {}
        for name, shape in shard:
            t = (torch.randn(shape, generator=g) * 0.02).to(torch.bfloat16)
            tensors[name] = t
            weight_map[name] = fname
            total += t.numel() * 2
        save_file(tensors, os.path.join(d, fname), metadata={"format": "pt"})
        del tensors
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map},
              open(os.path.join(d, "model.safetensors.index.json"), "w"), indent=1)
    cfg = {"architectures": ["LlavaForConditionalGeneration"], "model_type": "llava", "image_token_index": 31999,
           "vision_feature_layer": -2, "vision_feature_select_strategy": "default", "projector_hidden_act": "gelu",
           "text_config": text_cfg(), "vision_config": vision_cfg(), "tie_word_embeddings": False}
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"), indent=1)
    print(json.dumps({"dir": d, "shards": len(shards), "bytes_bf16": total}))


def rss_anon():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


def load(d, dtype):
    from safetensors.torch import load_file
    files = sorted(set(json.load(open(os.path.join(d, "model.safetensors.index.json")))["weight_map"].values()))
    peak, stop = [rss_anon()], [False]
    before = peak[0]

    def sample():
        while not stop[0]:
            peak[0] = max(peak[0], rss_anon())
            time.sleep(0.002)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t0 = time.perf_counter()
    sd = {}
    for f in files:
        part = load_file(os.path.join(d, f))
        if dtype == "f32":
            for k in list(part):
                sd[k] = part.pop(k).float()
        elif dtype == "bf16-copy":
            for k in list(part):
                sd[k] = part.pop(k).clone()
        else:
            sd.update(part)
        del part
    secs = time.perf_counter() - t0
    stop[0] = True
    th.join()
    peak[0] = max(peak[0], rss_anon())
    nbytes = sum(t.numel() * t.element_size() for t in sd.values())
    loader = {"bf16": "load_file", "bf16-copy": "load_file + clone", "f32": "load_file + float"}[dtype]
    print(json.dumps({"loader": loader, "dtype": dtype, "seconds": secs,
                      "peak_anon": peak[0], "anon_before": before, "model_bytes": nbytes}))


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2])
    elif sys.argv[1] == "load":
        load(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(__doc__)
