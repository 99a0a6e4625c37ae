"""Run under torchrun --nproc_per_node 2: one GRPO update of a tiny Qwen3 in a DeepSpeed ZeRO-2 engine
(gloo) with different data on each rank; writes each rank's parameter vector before and after."""
import os
import sys

import torch

from relate_fast.config import load_config
from relate_fast.batching import grpo_micro_loss, micro_batches, pack
from relate_fast.distributed import init_distributed
from relate_fast.updater import PolicyUpdater


def main(out_dir):
    rank, world = init_distributed()
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)  # same initial weights on both ranks
    model = Qwen3ForCausalLM(Qwen3Config(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                                         tie_word_embeddings=False))
    cfg = load_config(None, ["--grpo.lr", "0.01"])
    eng = PolicyUpdater(model, cfg, world)
    before = torch.cat([p.detach().flatten().clone() for p in eng.model.parameters()])
    g = torch.Generator().manual_seed(100 + rank)  # different data per rank
    prompts = [torch.randint(1, 97, (int(n),), generator=g).tolist() for n in torch.randint(3, 9, (6,), generator=g)]
    comps = [torch.randint(1, 97, (int(n),), generator=g).tolist() for n in torch.randint(1, 7, (6,), generator=g)]
    batch = pack(prompts, comps, 0)
    adv = torch.randn(6, generator=g)
    slices = micro_batches(batch, 40)
    assert len(slices) > 1
    for k, s in enumerate(slices):
        loss, _, _ = grpo_micro_loss(eng.model, batch, s, adv, total_rows=6, total_tokens=float(batch.mask.sum()),
                                     max_completion_length=8)
        eng.backward(loss, boundary=k == len(slices) - 1)
    eng.step()
    after = torch.cat([p.detach().flatten().clone() for p in eng.model.parameters()])
    torch.save({"before": before, "after": after}, os.path.join(out_dir, f"rank{rank}.pt"))


if __name__ == "__main__":
    main(sys.argv[1])
