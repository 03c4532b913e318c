#!/usr/bin/env python3
"""Write a tiny random-weight llama GGUF and the matching HF tokenizer.json.

    python make_gguf.py OUT_DIR [--seed N] [--ctx N]

Writes OUT_DIR/tiny.gguf and OUT_DIR/tokenizer.json.

Tokenizer: GPT-2 style byte-level BPE (GPT-2 pre-tokenizer regex) with the
256 byte tokens, so every UTF-8 byte of a prompt is exactly one token
(id == byte value).  Ids 256/257 are the control tokens <s> (BOS) and </s>
(EOS); add_bos_token and add_eos_token are false, so llama.cpp adds nothing to
a prompt and prompt_tokens == len(prompt.encode("utf-8")).

llama.cpp refuses a "gpt2" vocab without a merges key, and gguf-py cannot
write an empty array, so there is exactly one merge, "a 1" -> id 258 "a1",
which can never fire: the GPT-2 regex always puts a letter and a digit in
different pre-tokens, and BPE merges only inside a pre-token.  (Do not write
literal "<s>" or "</s>" in prompts: both tokenizers parse them as specials.)

Weights are random (seeded), with one deliberate structure so that output
lengths are exact without any request field: hidden dimension 0 of the
residual stream is a constant (every embedding has C there and no layer writes
to it), and output.weight gives every token except ' ' and 'a'..'z' a weight
of -K on that dimension.  After the final RMSNorm, dimension 0 is about
sqrt(n_embd), so those tokens (EOS, BOS, every other byte) get logits around
-K*8 and are never sampled at any sane temperature.  Generation therefore
never stops early: it always runs to max_tokens, and the text it produces is
lowercase ASCII letters and spaces, one token per character (never "a1").
"""
import argparse
import json
import os

import numpy as np
import gguf

N_EMBD = 64
N_LAYER = 2
N_HEAD = 4
N_HEAD_KV = 2
N_FF = 128
HEAD_DIM = N_EMBD // N_HEAD
BOS_ID = 256
EOS_ID = 257
NEVER_MERGE = ("a", "1")  # see docstring
N_VOCAB = 259
SAMPLEABLE = [ord(" ")] + list(range(ord("a"), ord("z") + 1))
C_RESID = 1.0  # constant value of residual dimension 0
K_SUPPRESS = 1.0e4  # weight on dimension 0 for unsampleable tokens

# Trivial chat template: "role: content\n" per message, then "assistant: ".
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] }}: {{ message['content'] }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable unicode char map."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def token_strings():
    b2u = bytes_to_unicode()
    return [b2u[b] for b in range(256)] + ["<s>", "</s>", "".join(NEVER_MERGE)]


def write_tokenizer_json(path, tokens):
    vocab = {t: i for i, t in enumerate(tokens)}
    added = [
        {
            "id": i,
            "content": tokens[i],
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for i in (BOS_ID, EOS_ID)
    ]
    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {
            "type": "ByteLevel",
            "add_prefix_space": False,
            "trim_offsets": True,
            "use_regex": True,
        },
        "post_processor": None,
        "decoder": {
            "type": "ByteLevel",
            "add_prefix_space": False,
            "trim_offsets": True,
            "use_regex": True,
        },
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": [" ".join(NEVER_MERGE)],
        },
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False, indent=1)
        f.write("\n")


def make_tensors(rng):
    f32 = np.float32

    def rnd(*shape, std=0.02):
        return (rng.standard_normal(shape) * std).astype(f32)

    t = {}
    emb = rnd(N_VOCAB, N_EMBD)
    emb[:, 0] = C_RESID
    t["token_embd.weight"] = emb
    for i in range(N_LAYER):
        p = f"blk.{i}."
        t[p + "attn_norm.weight"] = np.ones(N_EMBD, dtype=f32)
        t[p + "attn_q.weight"] = rnd(N_HEAD * HEAD_DIM, N_EMBD, std=0.2)
        t[p + "attn_k.weight"] = rnd(N_HEAD_KV * HEAD_DIM, N_EMBD, std=0.2)
        t[p + "attn_v.weight"] = rnd(N_HEAD_KV * HEAD_DIM, N_EMBD, std=0.2)
        wo = rnd(N_EMBD, N_HEAD * HEAD_DIM, std=0.05)
        wo[0, :] = 0.0  # never write residual dim 0
        t[p + "attn_output.weight"] = wo
        t[p + "ffn_norm.weight"] = np.ones(N_EMBD, dtype=f32)
        t[p + "ffn_gate.weight"] = rnd(N_FF, N_EMBD, std=0.2)
        t[p + "ffn_up.weight"] = rnd(N_FF, N_EMBD, std=0.2)
        wd = rnd(N_EMBD, N_FF, std=0.05)
        wd[0, :] = 0.0  # never write residual dim 0
        t[p + "ffn_down.weight"] = wd
    t["output_norm.weight"] = np.ones(N_EMBD, dtype=f32)
    out = rnd(N_VOCAB, N_EMBD, std=0.1)  # small: near-uniform over sampleable tokens
    out[:, 0] = -K_SUPPRESS
    out[SAMPLEABLE, 0] = 0.0
    t["output.weight"] = out
    return t


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--ctx", type=int, default=8192, help="llama.context_length")
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)

    tokens = token_strings()
    assert len(tokens) == N_VOCAB and len(set(tokens)) == N_VOCAB
    types = [gguf.TokenType.NORMAL] * 256 + [gguf.TokenType.CONTROL] * 2 + [gguf.TokenType.NORMAL]

    path = os.path.join(args.out_dir, "tiny.gguf")
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("fuselab-tiny-random")
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_context_length(args.ctx)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_rope_dimension_count(HEAD_DIM)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(N_VOCAB)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")  # llama.cpp: exactly the GPT-2 regex, as HF ByteLevel
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges([" ".join(NEVER_MERGE)])
    w.add_bos_token_id(BOS_ID)
    w.add_eos_token_id(EOS_ID)
    w.add_add_bos_token(False)
    w.add_add_eos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)

    for name, arr in make_tensors(np.random.default_rng(args.seed)).items():
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    write_tokenizer_json(os.path.join(args.out_dir, "tokenizer.json"), tokens)
    print(f"wrote {path} ({os.path.getsize(path)} bytes) and tokenizer.json")


if __name__ == "__main__":
    main()
