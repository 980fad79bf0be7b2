"""Oracle fixtures for the `mdpo` crate's loss (test-only; deterministic; tiny JSON output).

Usage: $AMP_PYTHON tests/oracles/gen_mdpo.py <outdir>   -> <outdir>/mdpo_loss.json

Two independent references, both evaluated with torch autograd in float64:

* TRL's DPO loss for K = 2. TRL 1.16.0 has no standalone `dpo_loss` any more (the loss is inline in
  `DPOTrainer._compute_loss`, trl/trainer/dpo_trainer.py), and installing TRL pulls accelerate and
  datasets, so its formulas are reproduced here verbatim from that source:
      chosen_logratios = chosen_logps - ref_chosen_logps
      rejected_logratios = rejected_logps - ref_rejected_logps
      delta_score = chosen_logratios - rejected_logratios
      sigmoid: per_sequence_loss = -F.logsigmoid(self.beta * delta_score)
      hinge:   per_sequence_loss = torch.relu(1 - self.beta * delta_score)
      loss = per_sequence_loss.mean()
  plus the cDPO label-smoothed sigmoid of TRL <= 0.2x (`dpo_loss`, loss_type="sigmoid"):
      -F.logsigmoid(beta * logits) * (1 - label_smoothing) - F.logsigmoid(-beta * logits) * label_smoothing
  and TRL's logged rewards: chosen_rewards = beta * chosen_logratios (accuracy = chosen > rejected).
* The AMP authors' MDPO loop (takomc/amp models/dpo_trainer.py, get_batch_loss_metrics): iterate
  i < j over the K level lists, call dpo_loss(..., return_cons=True) when i == 0 (adds
  reference_chosen_logps - policy_chosen_logps), concatenate the per-pair losses, take .mean().
"""
import json
import os
import sys

import torch
import torch.nn.functional as F


def trl_dpo(pc, pr, rc, rr, beta, loss_type="sigmoid", label_smoothing=0.0):
    chosen_logratios = pc - rc
    rejected_logratios = pr - rr
    delta_score = chosen_logratios - rejected_logratios
    if loss_type == "sigmoid":
        per_sequence_loss = (
            -F.logsigmoid(beta * delta_score) * (1 - label_smoothing)
            - F.logsigmoid(-beta * delta_score) * label_smoothing
        )
    elif loss_type == "hinge":
        per_sequence_loss = torch.relu(1 - beta * delta_score)
    else:
        raise ValueError(loss_type)
    return per_sequence_loss.mean(), beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


def amp_dpo_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta, return_cons):
    # the authors' fork of TRL's dpo_loss (sigmoid, label_smoothing = 0)
    pi_logratios = policy_chosen - policy_rejected
    ref_logratios = reference_chosen - reference_rejected
    logits = pi_logratios - ref_logratios
    losses = -F.logsigmoid(beta * logits)
    if return_cons:
        losses = losses + (reference_chosen - policy_chosen)
    return losses


def amp_mdpo(policy, reference, beta):
    k = policy.shape[0]
    losses = []
    for i in range(k):
        for j in range(i + 1, k):
            losses.append(amp_dpo_loss(policy[i], policy[j], reference[i], reference[j], beta, i == 0))
    return torch.cat(losses).mean()


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    g = torch.Generator().manual_seed(1234)
    fx = {"k2": [], "mdpo": []}
    for beta, b, ls, lt in [(0.1, 8, 0.0, "sigmoid"), (0.5, 5, 0.0, "sigmoid"), (0.1, 6, 0.2, "sigmoid"), (0.05, 7, 0.0, "hinge")]:
        logps = -(torch.rand(4, b, generator=g, dtype=torch.float64) * 80 + 5)
        pc, pr, rc, rr = [t.clone().requires_grad_(i < 2) for i, t in enumerate(logps)]
        loss, cr, rj = trl_dpo(pc, pr, rc, rr, beta, lt, ls)
        gc, gr = torch.autograd.grad(loss, [pc, pr])
        fx["k2"].append({
            "beta": beta, "label_smoothing": ls, "loss_type": lt,
            "policy": [pc.tolist(), pr.tolist()], "reference": [rc.tolist(), rr.tolist()],
            "loss": loss.item(), "grad": [gc.tolist(), gr.tolist()],
            "chosen_rewards": cr.mean().item(), "rejected_rewards": rj.mean().item(),
            "accuracy": (cr > rj).double().mean().item(), "margin": (cr - rj).mean().item(),
        })
    for beta, k, b in [(0.1, 4, 6), (0.1, 3, 4), (0.3, 5, 3), (0.1, 2, 5)]:
        pol = -(torch.rand(k, b, generator=g, dtype=torch.float64) * 60 + 10)
        ref = -(torch.rand(k, b, generator=g, dtype=torch.float64) * 60 + 10)
        pol.requires_grad_(True)
        loss = amp_mdpo(pol, ref, beta)
        (grad,) = torch.autograd.grad(loss, [pol])
        fx["mdpo"].append({"beta": beta, "policy": pol.tolist(), "reference": ref.tolist(),
                           "loss": loss.item(), "grad": grad.tolist()})
    with open(os.path.join(out, "mdpo_loss.json"), "w") as f:
        json.dump(fx, f, indent=1)


if __name__ == "__main__":
    main()
