"""Does training move the realistic workload's response lengths? (why bench_vs_trl's realistic
workload trains at a learning rate of 1e-12)

The realistic workload's policy is random weights made to stop by hand (benchmarks.common.make_stop:
one residual dimension carries EOS's logit boost δ ≈ 23). Adam's first steps move every weight by about
the learning rate in the direction of its gradient's sign, whatever the gradient's size: on a random
network those moves add up coherently. This probe samples 6 prompts x 4 responses from a Qwen3 of the
1.7B width (`L` layers, CPU), takes one GRPO-like gradient (advantage +1 for responses shorter than
37 tokens, -1 otherwise), applies 1, 3 and 6 sign steps of 1e-6 and samples again (two seeds each).

    python benchmarks/probe_stop_drift.py 6

Measured on the 2-core CPU machine, 2026-12-02 (6 layers): mean length 37.8 / 39.8 before; 13.6 / 14.2
after one step; 2.9 / 3.4 after three; 1.1 / 1.1 after six (benchmarks/RESULTS.md, issue 24).
"""
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from transformers import Qwen3Config, Qwen3ForCausalLM
from benchmarks.common import qwen3_tokenizer, make_stop
from relate_fast.data import sample_ads
from relate_fast.models import prompt_ids
from relate_fast.rollout.hf import HFEngine
torch.manual_seed(0)
tok = qwen3_tokenizer()
L = int(sys.argv[1])
cfg = Qwen3Config(vocab_size=151_936, eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), pad_token_id=tok.pad_token_id,
                  hidden_size=2048, intermediate_size=6144, num_hidden_layers=L, num_attention_heads=16,
                  num_key_value_heads=8, head_dim=128, tie_word_embeddings=True)
m = Qwen3ForCausalLM(cfg)
with torch.no_grad():
    make_stop(m, tok, 37.0)
rows = sample_ads("train", langs=["en"])
pids = [prompt_ids(tok, rows[i].prompt) for i in range(6)]
eng = HFEngine(m, tok)
def gen(seed=0):
    return eng.generate(pids, 4, max_new_tokens=128, temperature=1.0, seed=seed)
def mean_len(out): return statistics.mean(len(c) for g in out for c in g)
out = gen(); print("before", mean_len(out), mean_len(gen(1)), flush=True)
m.zero_grad()
k = 0
for g, p in zip(out, pids):
    for c in g:
        adv = 1.0 if len(c) < 37 else -1.0  # like a length reward: shorter preferred
        h = m.model(torch.tensor([p + c])).last_hidden_state[0, len(p) - 1:-1]
        lp = torch.log_softmax(m.lm_head(h).float(), -1).gather(-1, torch.tensor(c)[:, None])
        (-(adv * lp.mean())).backward(); k += 1
done = 0
for steps in (1, 3, 6):
    with torch.no_grad():
        for q in m.parameters():
            if q.grad is not None:
                q.sub_(1e-6 * torch.sign(q.grad) * (steps - done))
    done = steps
    print("after", steps, "Adam-sized steps:", mean_len(gen()), mean_len(gen(1)), flush=True)
