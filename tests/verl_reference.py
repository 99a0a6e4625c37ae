"""A faithful re-statement of the verl 0.9.1 functions our verl integration is checked against
(verl/trainer/ppo/core_algos.py: compute_grpo_outcome_advantage, compute_policy_loss_vanilla,
agg_loss, kl_penalty_forward), for the parity suite where verl is not installed. Where it is
(`bash scripts/setup.sh peers`, as in CI), tests/test_integration_verl_real.py checks this restatement
against the real functions and the integration against verl's own registries."""
from collections import defaultdict

import torch


def masked_mean(x, mask):
    return (x * mask).sum() / mask.sum()


def grpo_outcome_advantage(token_level_rewards, response_mask, index, epsilon=1e-6, norm_adv_by_std_in_grpo=True):
    scores = token_level_rewards.sum(dim=-1)
    by_id = defaultdict(list)
    for i in range(scores.shape[0]):
        by_id[index[i]].append(scores[i])
    mean, std = {}, {}
    for k, v in by_id.items():
        if len(v) == 1:
            mean[k], std[k] = torch.tensor(0.0), torch.tensor(1.0)
        else:
            t = torch.stack(v)
            mean[k], std[k] = t.mean(), t.std()
    out = scores.clone()
    for i in range(scores.shape[0]):
        out[i] = (scores[i] - mean[index[i]]) / (std[index[i]] + epsilon) if norm_adv_by_std_in_grpo \
            else scores[i] - mean[index[i]]
    return out.unsqueeze(-1) * response_mask


def agg_loss(loss_mat, loss_mask, loss_agg_mode):
    if loss_agg_mode == "token-mean":
        return (loss_mat * loss_mask).sum() / loss_mask.sum()
    if loss_agg_mode == "token-sum":
        return (loss_mat * loss_mask).sum()
    if loss_agg_mode in ("seq-mean-token-sum", "seq-mean-token-sum-norm"):
        seq = (loss_mat * loss_mask).sum(-1)
        seq_mask = (loss_mask.sum(-1) > 0).float()
        loss = (seq * seq_mask).sum() / seq_mask.sum()
        if loss_agg_mode == "seq-mean-token-sum-norm":
            loss = loss / loss_mask.shape[-1]
        return loss
    if loss_agg_mode == "seq-mean-token-mean":
        n = loss_mask.sum(-1)
        seq = (loss_mat * loss_mask).sum(-1) / (n + 1e-8)
        seq_mask = (n > 0).float()
        return (seq * seq_mask).sum() / seq_mask.sum()
    raise ValueError(loss_agg_mode)


def policy_loss_vanilla(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, clip_low, clip_high,
                        clip_ratio_c=3.0):
    neg_kl = torch.clamp(log_prob - old_log_prob, -20.0, 20.0)
    ratio = torch.exp(neg_kl)
    l1 = -advantages * ratio
    l2 = -advantages * torch.clamp(ratio, 1 - clip_low, 1 + clip_high)
    clipped = torch.maximum(l1, l2)
    l3 = -advantages * clip_ratio_c  # dual clip, for negative advantages
    dual = torch.min(l3, clipped)
    per_token = torch.where(advantages < 0, dual, clipped)
    return agg_loss(per_token, response_mask, loss_agg_mode), per_token


def kl_penalty_forward(logprob, ref_logprob, kind):
    if kind in ("kl", "k1"):
        return logprob - ref_logprob
    if kind in ("mse", "k2"):
        return 0.5 * (logprob - ref_logprob).square()
    if kind in ("low_var_kl", "k3"):
        kl = torch.clamp(ref_logprob - logprob, -20, 20)
        return torch.clamp(torch.exp(kl) - kl - 1, -10, 10)
    raise ValueError(kind)
