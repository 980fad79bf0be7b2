"""transformers side of `cargo bench -p mllm --bench decode`.

Usage: $AMP_PYTHON crates/mllm/benches/decode_hf.py <outdir> <threads> <new_tokens> <reps> [vocab]
Writes a small random LLaVA (CLIP 112px/14 -> 64 image tokens, LLaMA hidden 256, 4 layers,
8 heads / 4 KV heads, vocab 32000 unless given) to <outdir>/model with the prompt, then times
LlavaForConditionalGeneration.generate (greedy, KV cache, EOS disabled) and prints one JSON line.
"""
import json, os, sys, time
import torch
from transformers import LlavaConfig, LlavaForConditionalGeneration, CLIPVisionConfig, LlamaConfig

out, threads, new_tokens, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
vocab = int(sys.argv[5]) if len(sys.argv) > 5 else 32000
torch.set_num_threads(threads)
torch.manual_seed(0)
vc = CLIPVisionConfig(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                      image_size=112, patch_size=14, hidden_act="quick_gelu")
tc = LlamaConfig(vocab_size=vocab, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                 num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=1024,
                 bos_token_id=1, eos_token_id=2, pad_token_id=0)
IMG = vocab - 1
cfg = LlavaConfig(vision_config=vc, text_config=tc, image_token_index=IMG, image_seq_length=64)
m = LlavaForConditionalGeneration(cfg).eval()
m.generation_config.eos_token_id = None
m.generation_config.pad_token_id = 0
mdir = os.path.join(out, "model")
m.save_pretrained(mdir)
g = torch.Generator().manual_seed(1)
text = torch.randint(3, vocab - 2, (96,), generator=g).tolist()
ids = [1] + text[:16] + [IMG] * 64 + text[16:]
px = torch.randn(1, 3, 112, 112, generator=g)
json.dump({"ids": ids}, open(os.path.join(out, "prompt.json"), "w"))
torch.save  # (pixel values are regenerated in Rust from this file)
from safetensors.torch import save_file
save_file({"pixel_values": px}, os.path.join(out, "pixels.safetensors"))

inp = dict(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long), pixel_values=px)

def run(n):
    t = time.perf_counter()
    with torch.no_grad():
        o = m.generate(**inp, max_new_tokens=n, min_new_tokens=n, do_sample=False)
    return time.perf_counter() - t, o[0, len(ids):].tolist()

run(2)  # warm-up
pre, full = [], []
for _ in range(reps):
    pre.append(run(1)[0])
    t, toks = run(new_tokens + 1)
    full.append(t)
pre.sort(); full.sort()
p, f = pre[0], full[0]  # best of reps (shared machine)
print(json.dumps({"prefill_ms": p * 1e3, "decode_tok_s": new_tokens / (f - p), "tokens": toks,
                  "prompt_len": len(ids)}))
