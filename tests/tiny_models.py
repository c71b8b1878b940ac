"""Tiny config-built LMs shared by the tests: causal LMs with SmolLM2's real tokenizer, a masked LM."""
from __future__ import annotations

import torch


def smollm2_tokenizer():
    from transformers import AutoTokenizer

    from kgprobe.models import model_source

    tokenizer = AutoTokenizer.from_pretrained(model_source("smollm2-135m"))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def tiny_llama(tok, *, tie_word_embeddings: bool = False):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      tie_word_embeddings=tie_word_embeddings)
    return LlamaForCausalLM(cfg).eval()


def tiny_gpt2(tok):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=len(tok), n_positions=128)
    return GPT2LMHeadModel(cfg).eval()


def save_tiny_masked_lm(path):
    """A random 2-layer BERT masked LM with a 20-word vocabulary (capitals and countries), saved in
    ``path`` like a user's local model; returns ``path``."""
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "paris", "is", "the", "capital", "of", "france", ".",
             "rome", "italy", "tokyo", "japan", "lima", "peru", "berlin", "germany"]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=64, architectures=["BertForMaskedLM"])).save_pretrained(path)
    BertTokenizerFast(vocab=str(path / "vocab.txt")).save_pretrained(path)
    return path
