"""Oracle fixtures for the `mllm` crate (LLaVA-1.5 in tch), from transformers 5.x.

Usage: $AMP_PYTHON tests/oracles/gen_llava.py <outdir>

Writes (deterministic, tiny, random weights):
  hf/            LlavaForConditionalGeneration.save_pretrained (single file) + tokenizer.json +
                 preprocessor_config.json
  hf_sharded/    the same weights split into shards with model.safetensors.index.json
  hf_tied/       a tied-embedding variant
  hf_tied_top/   tied by the top-level `tie_word_embeddings: true` only (text_config says false), as
                 `LlavaConfig(tie_word_embeddings=True)` with a default text config writes it
  original/      the original LLaVA-1.5 layout (LlavaLlamaForCausalLM keys, mm_* config) with the
                 vision tower in a separate CLIP dir `clip/` named by mm_vision_tower
  original_embedded/  the original layout with the tower embedded (model.vision_tower.vision_tower.*)
  image.png      a non-square test image (50x34)
  corrupt.png    a file that is not an image
  oracle.safetensors / oracle.json   pixel values, input ids, logits, generations
  peft_adapter/  a LoRA adapter written by PEFT + peft_logits in oracle.safetensors
Requires pillow (PIL) for CLIPImageProcessorPil.
"""
import json, os, sys, shutil
import numpy as np
import torch
from safetensors.torch import save_file, load_file

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)
np.random.seed(0)

from tokenizers import Tokenizer, models, trainers, pre_tokenizers, decoders, processors
from transformers import (LlavaConfig, LlavaForConditionalGeneration, CLIPVisionConfig, LlamaConfig,
                          CLIPVisionModel)
try:
    from PIL import Image
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
except ImportError as e:  # pillow is a test-only oracle dependency (scripts/setup.sh)
    raise SystemExit(f"gen_llava.py needs pillow in $AMP_PYTHON (pip install pillow): {e}")

# ---------------------------------------------------------------- tokenizer
SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the user's questions.")
corpus = [SYSTEM, "USER: ASSISTANT:", "What is in the picture? A red square and a blue circle.",
          "What color is the circle? The circle is blue.", "Describe the image in detail.",
          "There is a cat sitting on a mat next to a dog.", "How many objects are there? Two objects."] * 20
tok = Tokenizer(models.BPE(unk_token="<unk>"))
tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first")
trainer = trainers.BpeTrainer(vocab_size=250, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
tok.train_from_iterator(corpus, trainer)
tok.add_special_tokens(["<image>"])
tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 1)])
IMAGE_ID = tok.token_to_id("<image>")
VOCAB = IMAGE_ID + 1
assert tok.token_to_id("<s>") == 1 and tok.token_to_id("</s>") == 2

# ---------------------------------------------------------------- model
vc = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      image_size=28, patch_size=14, projection_dim=16, hidden_act="quick_gelu")
def text_cfg(tie=False):
    return LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                       rope_theta=5000.0, rms_norm_eps=1e-6, tie_word_embeddings=tie,
                       bos_token_id=1, eos_token_id=2, pad_token_id=0)
N_IMG = (28 // 14) ** 2
def make(tie=False, seed=0, text_tie=None):
    cfg = LlavaConfig(vision_config=vc, text_config=text_cfg(tie if text_tie is None else text_tie),
                      image_token_index=IMAGE_ID, image_seq_length=N_IMG, vision_feature_layer=-2,
                      vision_feature_select_strategy="default", tie_word_embeddings=tie)
    torch.manual_seed(seed)
    m = LlavaForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # larger random weights than the default init so logits are not flat
        for n, p in m.named_parameters():
            if "norm" in n and n.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) * (0.5 / max(p.shape[-1], 1) ** 0.5 if p.dim() > 1 else 0.05))
    m.generation_config.pad_token_id = 0
    m.generation_config.bos_token_id = 1
    m.generation_config.eos_token_id = 2
    return m

model = make()
proc = CLIPImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28},
                             do_center_crop=True, do_resize=True, resample=3)

def write_common(d):
    tok.save(os.path.join(d, "tokenizer.json"))
    proc.save_pretrained(d)

hf = os.path.join(out, "hf")
model.save_pretrained(hf)
write_common(hf)
sh = os.path.join(out, "hf_sharded")
model.save_pretrained(sh, max_shard_size="20KB")
write_common(sh)
assert os.path.exists(os.path.join(sh, "model.safetensors.index.json")), os.listdir(sh)
tied = make(tie=True, seed=1)
tied.save_pretrained(os.path.join(out, "hf_tied"))
write_common(os.path.join(out, "hf_tied"))
tied_top = make(tie=True, seed=2, text_tie=False)
assert tied_top.lm_head.weight.data_ptr() == tied_top.get_input_embeddings().weight.data_ptr(), \
    "transformers no longer ties on the top-level flag alone: revisit crates/mllm/src/config.rs"
tied_top.save_pretrained(os.path.join(out, "hf_tied_top"))
write_common(os.path.join(out, "hf_tied_top"))
_top = json.load(open(os.path.join(out, "hf_tied_top", "config.json")))
assert _top["tie_word_embeddings"] is True and _top["text_config"]["tie_word_embeddings"] is False, _top

# original LLaVA-1.5 layout: renamed keys, mm_* config, a separate CLIP dir
sd = load_file(os.path.join(hf, "model.safetensors"))
orig, vision = {}, {}
for k, v in sd.items():
    if k.startswith("language_model.model."):
        orig["model." + k[len("language_model.model."):]] = v
    elif k == "language_model.lm_head.weight":
        orig["lm_head.weight"] = v
    elif k.startswith("multi_modal_projector.linear_1."):
        orig["model.mm_projector.0." + k.split(".")[-1]] = v
    elif k.startswith("multi_modal_projector.linear_2."):
        orig["model.mm_projector.2." + k.split(".")[-1]] = v
    elif k.startswith("vision_tower."):
        r = k[len("vision_tower."):]
        if r.startswith("vision_model."):
            r = r[len("vision_model."):]
        vision["vision_model." + r] = v
    else:
        raise SystemExit(f"unmapped key {k}")
od = os.path.join(out, "original")
os.makedirs(os.path.join(od, "clip"), exist_ok=True)
save_file(orig, os.path.join(od, "model.safetensors"), metadata={"format": "pt"})
vision_full = dict(vision)
vision_full["text_model.embeddings.token_embedding.weight"] = torch.zeros(4, 8)  # a full CLIP ckpt: ignored
vision_full["logit_scale"] = torch.zeros(())
save_file(vision_full, os.path.join(od, "clip", "model.safetensors"), metadata={"format": "pt"})
clip_cfg = {"architectures": ["CLIPModel"], "model_type": "clip", "vision_config": vc.to_dict()}
json.dump(clip_cfg, open(os.path.join(od, "clip", "config.json"), "w"), indent=1)
tcfg = text_cfg().to_dict()
tcfg.pop("rope_parameters", None)
tcfg.update({"architectures": ["LlavaLlamaForCausalLM"], "model_type": "llava_llama", "rope_theta": 5000.0,
             "mm_vision_tower": "clip", "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2,
             "mm_vision_select_feature": "patch", "mm_use_im_start_end": False, "mm_use_im_patch_token": False,
             "image_aspect_ratio": "pad", "mm_hidden_size": 32, "image_token_index": IMAGE_ID})
json.dump(tcfg, open(os.path.join(od, "config.json"), "w"), indent=1)
write_common(od)
oe = os.path.join(out, "original_embedded")
os.makedirs(oe, exist_ok=True)
emb = dict(orig)
for k, v in vision.items():
    emb["model.vision_tower.vision_tower." + k] = v
save_file(emb, os.path.join(oe, "model.safetensors"), metadata={"format": "pt"})
tcfg2 = dict(tcfg); tcfg2["mm_vision_tower"] = "openai/clip-vit-large-patch14-336"; tcfg2["vision_config"] = vc.to_dict()
json.dump(tcfg2, open(os.path.join(oe, "config.json"), "w"), indent=1)
write_common(oe)

# ---------------------------------------------------------------- image + preprocessing
rng = np.random.RandomState(0)
arr = np.zeros((34, 50, 3), dtype=np.uint8)
yy, xx = np.mgrid[0:34, 0:50]
arr[..., 0] = (xx * 5) % 256
arr[..., 1] = (yy * 7) % 256
arr[..., 2] = rng.randint(0, 256, size=(34, 50))
img = Image.fromarray(arr, "RGB")
img.save(os.path.join(out, "image.png"))
open(os.path.join(out, "corrupt.png"), "wb").write(b"this is not a png")
# a second, upscaled image (20x12) for the batch
arr2 = rng.randint(0, 256, size=(12, 20, 3)).astype(np.uint8)
img2 = Image.fromarray(arr2, "RGB")
img2.save(os.path.join(out, "image2.png"))

def expand2square(pil_img, background_color):
    w, h = pil_img.size
    if w == h:
        return pil_img
    if w > h:
        r = Image.new(pil_img.mode, (w, w), background_color); r.paste(pil_img, (0, (w - h) // 2)); return r
    r = Image.new(pil_img.mode, (h, h), background_color); r.paste(pil_img, ((h - w) // 2, 0)); return r

bg = tuple(int(x * 255) for x in proc.image_mean)
px_plain = proc(images=img, return_tensors="pt")["pixel_values"]
px_pad = proc(images=expand2square(img, bg), return_tensors="pt")["pixel_values"]
px2_pad = proc(images=expand2square(img2, bg), return_tensors="pt")["pixel_values"]

# ---------------------------------------------------------------- prompt encoding (vicuna_v1)
def segments(turns):
    """vicuna_v1 prompt as segments [(text, is_response, round)] (see crates/mllm/src/conversation.rs)."""
    segs = []
    for i in range(0, len(turns), 2):
        r = i // 2
        head = (SYSTEM + " " if r == 0 else "") + "USER: " + turns[i] + " ASSISTANT:"
        segs.append((head, False, r))
        if i + 1 < len(turns):
            segs.append((" " + turns[i + 1] + "</s>", True, r))
    return segs

def encode(turns):
    ids, mask, rounds = [], [], []
    first = True
    for text, resp, r in segments(turns):
        pieces = text.split("<image>")
        for j, p in enumerate(pieces):
            if j > 0:
                ids += [IMAGE_ID] * N_IMG; mask += [0] * N_IMG; rounds += [-1] * N_IMG
            e = tok.encode(p, add_special_tokens=first).ids if (p or first) else []
            first = False
            ids += e; mask += [1 if resp else 0] * len(e); rounds += [r if resp else -1] * len(e)
    return ids, mask, rounds

train_turns = ["<image>\nWhat is in the picture?", "A red square and a blue circle.",
               "What color is the circle?", "The circle is blue."]
gen_turns = ["<image>\nWhat is in the picture?", "A red square and a blue circle.", "What color is the circle?"]
gen2_turns = ["<image>\nDescribe the image in detail."]
train_ids, train_mask, train_rounds = encode(train_turns)
gen_ids, _, _ = encode(gen_turns)
gen2_ids, _, _ = encode(gen2_turns)

with torch.no_grad():
    ids = torch.tensor([train_ids])
    logits = model(input_ids=ids, pixel_values=px_pad, attention_mask=torch.ones_like(ids)).logits
    logits_tied = tied(input_ids=ids, pixel_values=px_pad, attention_mask=torch.ones_like(ids)).logits
    logits_tied_top = tied_top(input_ids=ids, pixel_values=px_pad, attention_mask=torch.ones_like(ids)).logits
    g_ids = torch.tensor([gen_ids])
    am = torch.ones_like(g_ids)
    common = dict(input_ids=g_ids, pixel_values=px_pad, attention_mask=am, max_new_tokens=12, min_new_tokens=0)
    greedy = model.generate(**common, do_sample=False)[0, len(gen_ids):].tolist()
    beam = model.generate(**common, do_sample=False, num_beams=4, early_stopping=False, length_penalty=1.0)[0, len(gen_ids):].tolist()
    rep = model.generate(**common, do_sample=False, repetition_penalty=1.5, no_repeat_ngram_size=2)[0, len(gen_ids):].tolist()
    # batched, left padded
    L = max(len(gen_ids), len(gen2_ids))
    b_ids = torch.tensor([[0] * (L - len(x)) + x for x in (gen_ids, gen2_ids)])
    b_am = torch.tensor([[0] * (L - len(x)) + [1] * len(x) for x in (gen_ids, gen2_ids)])
    batch = model.generate(input_ids=b_ids, attention_mask=b_am, pixel_values=torch.cat([px_pad, px2_pad]),
                           max_new_tokens=12, do_sample=False)[:, L:].tolist()

# ---------------------------------------------------------------- PEFT adapter written by Python
peft_logits = None
try:
    from peft import LoraConfig as PLoraConfig, get_peft_model
    pm = make()
    pcfg = PLoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                       target_modules=r".*language_model.*\.(q_proj|v_proj|down_proj)", init_lora_weights=False)
    torch.manual_seed(3)
    peft_model = get_peft_model(pm, pcfg)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn_like(p) * 0.2)
    peft_model.save_pretrained(os.path.join(out, "peft_adapter"))
    with torch.no_grad():
        peft_logits = peft_model(input_ids=ids, pixel_values=px_pad, attention_mask=torch.ones_like(ids)).logits
except ImportError as e:
    print("peft unavailable:", e)

tensors = {
    "pixel_values_plain": px_plain.contiguous(), "pixel_values_pad": px_pad.contiguous(),
    "pixel_values2_pad": px2_pad.contiguous(),
    "logits": logits.float().contiguous(), "logits_tied": logits_tied.float().contiguous(),
    "logits_tied_top": logits_tied_top.float().contiguous(),
}
if peft_logits is not None:
    tensors["peft_logits"] = peft_logits.float().contiguous()
save_file(tensors, os.path.join(out, "oracle.safetensors"))
json.dump({
    "image_token_id": IMAGE_ID, "image_tokens": N_IMG, "system": SYSTEM,
    "train_turns": train_turns, "train_ids": train_ids, "train_mask": train_mask, "train_rounds": train_rounds,
    "gen_turns": gen_turns, "gen_ids": gen_ids, "gen2_turns": gen2_turns, "gen2_ids": gen2_ids,
    "greedy": greedy, "beam4": beam, "greedy_rep1.5_ngram2": rep, "batch_greedy": batch,
    "background": list(bg),
}, open(os.path.join(out, "oracle.json"), "w"), indent=1)
print("wrote", out)
