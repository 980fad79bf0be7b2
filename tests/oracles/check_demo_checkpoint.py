"""Loads a checkpoint directory written by `amp demo` with transformers, as a user would, and
prints its logits for the inputs the Rust test gives (the test compares them with mllm's).

Usage: $AMP_PYTHON tests/oracles/check_demo_checkpoint.py MODEL_DIR inputs.json out.json
inputs.json: {"input_ids": [[...]], "pixel_values": [[[[...]]]]}
out.json:    {"logits": [[[...]]], "missing": [...], "unexpected": [...], "vocab": n}
"""
import json, sys
import torch
from transformers import LlavaForConditionalGeneration, PreTrainedTokenizerFast, AutoImageProcessor

d, inp, out = sys.argv[1:4]
model, info = LlavaForConditionalGeneration.from_pretrained(d, output_loading_info=True)
model.eval()
tok = PreTrainedTokenizerFast.from_pretrained(d)
proc = AutoImageProcessor.from_pretrained(d)
x = json.load(open(inp))
with torch.no_grad():
    logits = model(input_ids=torch.tensor(x["input_ids"]),
                   pixel_values=torch.tensor(x["pixel_values"], dtype=torch.float32)).logits
json.dump({"logits": logits.tolist(), "missing": sorted(info["missing_keys"]),
           "unexpected": sorted(info["unexpected_keys"]), "vocab": len(tok),
           "crop": proc.crop_size["height"]}, open(out, "w"))
