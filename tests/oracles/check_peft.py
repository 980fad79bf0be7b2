"""Load a LoRA adapter written by the `mllm` crate with PEFT and write the adapted logits.

Usage: $AMP_PYTHON tests/oracles/check_peft.py <llava_fixture_dir> <adapter_dir>
Reads <llava_fixture_dir>/hf (base model) and oracle.{json,safetensors} (prompt ids, pixel values);
writes <adapter_dir>/peft_logits.safetensors with key `logits`.
"""
import json, sys, os
import torch
from safetensors.torch import load_file, save_file
from transformers import LlavaForConditionalGeneration
from peft import PeftModel

fx, adapter = sys.argv[1], sys.argv[2]
base = LlavaForConditionalGeneration.from_pretrained(os.path.join(fx, "hf")).eval()
model = PeftModel.from_pretrained(base, adapter).eval()
o = json.load(open(os.path.join(fx, "oracle.json")))
t = load_file(os.path.join(fx, "oracle.safetensors"))
ids = torch.tensor([o["train_ids"]])
with torch.no_grad():
    logits = model(input_ids=ids, pixel_values=t["pixel_values_pad"], attention_mask=torch.ones_like(ids)).logits
n = sum(1 for n, _ in model.named_parameters() if "lora_" in n)
print("lora tensors loaded:", n)
save_file({"logits": logits.float().contiguous()}, os.path.join(adapter, "peft_logits.safetensors"))
