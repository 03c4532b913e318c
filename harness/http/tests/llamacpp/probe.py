#!/usr/bin/env python3
"""Probe a running llama-cpp-python server serving tiny.gguf (see make_gguf.py).

    python probe.py URL [--tokenizer OUT_DIR/tokenizer.json]

Prints one line per check (OK / NO / INFO), then a summary table.  Exits 1
if a check that the fuselab fixture relies on fails (tokenizer agreement,
exact prompt/output lengths, SSE shape, openai client).
"""
import argparse
import http.client
import json
import random
import sys
import threading
import time
import urllib.parse

WORDS_RNG_SEED = 7
CHAT_TEMPLATE_ROLE_FMT = "{role}: {content}\n"
CHAT_GEN_PROMPT = "assistant: "


def rand_words(rng, n_words):
    letters = "abcdefghijklmnopqrstuvwxyz"
    return " ".join(
        "".join(rng.choice(letters) for _ in range(rng.randint(1, 9)))
        for _ in range(n_words)
    )


class Http:
    def __init__(self, url):
        u = urllib.parse.urlparse(url)
        self.host, self.port = u.hostname, u.port or 80

    def _conn(self):
        return http.client.HTTPConnection(self.host, self.port, timeout=300)

    def get(self, path):
        c = self._conn()
        c.request("GET", path)
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, data

    def post(self, path, body):
        c = self._conn()
        c.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        r = c.getresponse()
        data = r.read()
        c.close()
        try:
            return r.status, json.loads(data)
        except ValueError:
            return r.status, data.decode("utf-8", "replace")

    def stream(self, path, body):
        """POST and return (status, content_type, raw lines as str)."""
        c = self._conn()
        c.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        r = c.getresponse()
        ctype = r.getheader("content-type")
        raw = r.read().decode("utf-8")
        c.close()
        return r.status, ctype, raw.split("\n")


def parse_sse(lines):
    """Summarise an SSE body: data chunks, [DONE], comments, usage."""
    s = {"data": 0, "done": False, "done_last": False, "comments": 0, "chunks": [],
         "other": 0, "usage": None, "finish": None, "text": "", "text_chunks": 0}
    data_lines = []
    for ln in lines:
        ln = ln.rstrip("\r")
        if not ln:
            continue
        if ln.startswith(":"):
            s["comments"] += 1
        elif ln.startswith("data:"):
            data_lines.append(ln[5:].strip())
        else:
            s["other"] += 1
    for i, d in enumerate(data_lines):
        s["data"] += 1
        if d == "[DONE]":
            s["done"] = True
            s["done_last"] = i == len(data_lines) - 1
            continue
        ch = json.loads(d)
        s["chunks"].append(ch)
        if ch.get("usage"):
            s["usage"] = ch["usage"]
        for c in ch.get("choices", []):
            piece = c.get("text")
            if piece is None:
                piece = (c.get("delta") or {}).get("content")
            if piece:
                s["text"] += piece
                s["text_chunks"] += 1
            if c.get("finish_reason"):
                s["finish"] = c["finish_reason"]
    return s


class Report:
    def __init__(self):
        self.rows = []
        self.failed = []

    def add(self, feature, ok, detail, required=False):
        tag = {True: "OK", False: "NO", None: "INFO"}[ok]
        print(f"[{tag:4}] {feature}: {detail}", flush=True)
        self.rows.append((feature, tag, detail))
        if required and ok is False:
            self.failed.append(feature)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url", help="e.g. http://127.0.0.1:8088")
    ap.add_argument("--tokenizer", help="tokenizer.json from make_gguf.py")
    ap.add_argument("--model", default="tiny")
    args = ap.parse_args()
    h = Http(args.url)
    rep = Report()
    rng = random.Random(WORDS_RNG_SEED)
    M = args.model

    # --- models / health / metrics -------------------------------------
    st, data = h.get("/v1/models")
    ids = [m["id"] for m in json.loads(data)["data"]] if st == 200 else []
    rep.add("GET /v1/models", st == 200, f"HTTP {st}, ids={ids}", required=True)
    for path in ("/metrics", "/health", "/v1/health"):
        st, data = h.get(path)
        rep.add(f"GET {path}", st == 200, f"HTTP {st} {data[:60]!r}")

    # --- tokenizer agreement -------------------------------------------
    texts = [
        "hello world",
        "  two  spaces  and\ttab\nnewline ",
        "Hello, World! 123 #$%&'()*+,-./:;<=>?@[]^_`{|}~",
        "h\u00e9llo \u2014 \u65e5\u672c\u8a9e \U0001F642",
        rand_words(rng, 12),
        rand_words(rng, 200),
        "x" * 1000,
        "a1 a1a1 1a xa1y A1 \u00e41 a\u0661",  # the never-firing merge "a 1"
    ]
    hf = None
    if args.tokenizer:
        from tokenizers import Tokenizer

        hf = Tokenizer.from_file(args.tokenizer)
    all_ok = True
    for t in texts:
        st, body = h.post("/extras/tokenize", {"input": t, "model": M})
        srv = body["tokens"] if st == 200 else None
        want = list(t.encode("utf-8"))
        hf_ids = hf.encode(t).ids if hf else None
        ok = srv == want and (hf is None or hf_ids == want)
        all_ok &= ok
        if not ok:
            print(f"   mismatch for {t[:40]!r}: server={srv and srv[:20]} hf={hf_ids and hf_ids[:20]} want={want[:20]}")
    rep.add("tokenize: server == tokenizer.json == utf-8 bytes",
            all_ok, f"{len(texts)} texts incl. unicode and random lowercase words"
            + ("" if hf else " (tokenizer.json not checked: no --tokenizer)"), required=True)
    st, body = h.post("/extras/tokenize", {"input": "a<s>b</s>", "model": M})
    hf_sp = hf.encode("a<s>b</s>").ids if hf else None
    rep.add("tokenize: literal '<s>'/'</s>' in text", None,
            f"server={body.get('tokens') if st == 200 else st} hf={hf_sp} (both parse them as specials; avoid '<' in prompts)")

    # --- non-streaming completion: exact lengths -----------------------
    prompt = rand_words(rng, 60)
    n_prompt = len(prompt.encode())
    exact = True
    details = []
    for max_tokens in (1, 2, 17, 128, 700):
        for temp in (0.0, 0.8, 1.5):
            st, body = h.post("/v1/completions", {
                "model": M, "prompt": prompt, "max_tokens": max_tokens,
                "temperature": temp, "stream": False})
            if st != 200:
                exact = False
                details.append(f"HTTP {st}")
                continue
            u = body["usage"]
            c = body["choices"][0]
            ok = (u["prompt_tokens"] == n_prompt and u["completion_tokens"] == max_tokens
                  and c["finish_reason"] == "length" and len(c["text"].encode()) == max_tokens)
            if not ok:
                details.append(f"max={max_tokens} T={temp}: usage={u} finish={c['finish_reason']} len={len(c['text'])}")
            exact &= ok
    rep.add("completions: exact prompt_tokens & completion_tokens with only max_tokens",
            exact, f"prompt {n_prompt} tokens; max_tokens 1/2/17/128/700 x T 0/0.8/1.5 -> finish_reason=length, "
            f"text == max_tokens ASCII chars {'; '.join(details)}", required=True)
    rep.add("completions: sample output", None, repr(body["choices"][0]["text"][:60]) if st == 200 else st)

    # --- streaming completion ------------------------------------------
    body = {"model": M, "prompt": prompt, "max_tokens": 50, "stream": True}
    st, ctype, lines = h.stream("/v1/completions", body)
    s = parse_sse(lines)
    rep.add("completions stream: SSE shape", st == 200 and s["done_last"] and s["other"] == 0,
            f"HTTP {st}, content-type={ctype!r}, {s['data']} data: lines, [DONE] last={s['done_last']}, "
            f"{s['comments']} comment lines, first line={lines[0][:70]!r}", required=True)
    rep.add("completions stream: one chunk per token", s["text_chunks"] == 50 and len(s["text"]) == 50,
            f"{s['text_chunks']} non-empty text chunks, {len(s['text'])} chars, "
            f"{len(s['chunks'])} JSON chunks, finish_reason={s['finish']!r}", required=True)
    rep.add("completions stream: usage in stream without stream_options", s["usage"] is not None,
            f"usage={s['usage']}")
    body["stream_options"] = {"include_usage": True}
    st, ctype, lines = h.stream("/v1/completions", body)
    s = parse_sse(lines)
    rep.add("completions stream: stream_options.include_usage accepted", st == 200, f"HTTP {st}")
    rep.add("completions stream: usage chunk with include_usage", s["usage"] is not None,
            f"usage={s['usage']}; last JSON chunk keys={sorted(s['chunks'][-1].keys()) if s['chunks'] else None}")

    # --- prompt formats --------------------------------------------------
    for name, p in (("list of token ids", list(b"hello world")),
                    ("list of one string", ["hello world"]),
                    ("list of two strings", ["hello", "world"])):
        st, b = h.post("/v1/completions", {"model": M, "prompt": p, "max_tokens": 3})
        detail = f"HTTP {st}"
        if st == 200:
            detail += f", usage={b['usage']}"
        else:
            detail += f", {str(b)[:160]}"
        rep.add(f"prompt as {name}", st == 200, detail)

    # --- extra / unknown fields --------------------------------------------
    extras = {
        "min_tokens": {"min_tokens": 10},
        "logit_bias on EOS id 257": {"logit_bias": {"257": -100}},
        "ignore_eos": {"ignore_eos": True},
        "stream_options (non-stream)": {"stream_options": {"include_usage": True}},
        "continuous_usage_stats": {"stream_options": {"include_usage": True, "continuous_usage_stats": True}},
        "unknown field xyz_bogus": {"xyz_bogus": 1},
        "seed": {"seed": 42},
    }
    for name, extra in extras.items():
        st, b = h.post("/v1/completions", dict({"model": M, "prompt": "abc", "max_tokens": 20}, **extra))
        detail = f"HTTP {st}"
        detail += f", completion_tokens={b['usage']['completion_tokens']}" if st == 200 else f", {str(b)[:160]}"
        rep.add(f"field {name}", st == 200, detail + (" (accepted/ignored)" if st == 200 else " (rejected)"))

    # --- errors, defaults, context limit ------------------------------------
    st, b = h.post("/v1/completions", {"model": M, "prompt": "abc", "max_tokens": "many"})
    rep.add("invalid request (max_tokens='many')", None, f"HTTP {st} {str(b)[:100]}")
    st, b = h.post("/v1/completions", {"prompt": "abc"})
    rep.add("defaults (no model, no max_tokens)", None,
            f"HTTP {st}, model={b.get('model')!r}, usage={b.get('usage')}" if st == 200 else f"HTTP {st}")
    st, b = h.post("/v1/completions", {"model": M, "prompt": "abc", "max_tokens": 1})
    rep.add("response model field with model='tiny'", None, f"{b.get('model')!r}" if st == 200 else f"HTTP {st}")
    long_prompt = "x" * 3000
    st, b = h.post("/v1/completions", {"model": M, "prompt": long_prompt, "max_tokens": 2000})
    rep.add("prompt 3000 + max_tokens 2000 > n_ctx 4096", None,
            f"HTTP {st}, usage={b.get('usage')}, finish={b['choices'][0]['finish_reason']}" if st == 200
            else f"HTTP {st} {str(b)[:120]}")
    st, b = h.post("/v1/completions", {"model": M, "prompt": "x" * 5000, "max_tokens": 10})
    rep.add("prompt 5000 > n_ctx 4096", None, f"HTTP {st} {str(b)[:120]}")

    # --- chat completions -------------------------------------------------
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": rand_words(rng, 10)}]
    rendered = "".join(CHAT_TEMPLATE_ROLE_FMT.format(**m) for m in msgs) + CHAT_GEN_PROMPT
    want_chat = len(rendered.encode())
    st, b = h.post("/v1/chat/completions", {"model": M, "messages": msgs, "max_tokens": 33})
    if st == 200:
        u = b["usage"]
        ok = u["prompt_tokens"] == want_chat and u["completion_tokens"] == 33
        rep.add("chat: exact usage with GGUF chat template", ok,
                f"usage={u}, expected prompt_tokens={want_chat} (template 'role: content\\n'... + 'assistant: '), "
                f"finish={b['choices'][0]['finish_reason']}", required=True)
    else:
        rep.add("chat: non-stream", False, f"HTTP {st} {str(b)[:200]}", required=True)
    st, ctype, lines = h.stream("/v1/chat/completions", {"model": M, "messages": msgs, "max_tokens": 33,
                                                         "stream": True, "stream_options": {"include_usage": True}})
    s = parse_sse(lines)
    first = s["chunks"][0]["choices"][0].get("delta") if s["chunks"] else None
    rep.add("chat stream", st == 200 and s["done_last"] and s["text_chunks"] == 33,
            f"HTTP {st}, {s['data']} data: lines, first delta={first}, {s['text_chunks']} content chunks, "
            f"finish={s['finish']!r}, usage in stream={s['usage']}", required=True)

    # --- concurrency ---------------------------------------------------------
    res = {}

    def one(i):
        t0 = time.time()
        st, _, lines = h.stream("/v1/completions", {"model": M, "prompt": prompt, "max_tokens": 300,
                                                    "stream": True})
        s = parse_sse(lines)
        res[i] = (st, s["text_chunks"], s["finish"], round(t0, 3), round(time.time(), 3))

    ths = [threading.Thread(target=one, args=(i,)) for i in range(3)]
    t0 = time.time()
    for t in ths:
        t.start()
        time.sleep(0.05)
    for t in ths:
        t.join()
    ok = all(r[0] == 200 and r[1] == 300 and r[2] == "length" for r in res.values())
    rep.add("3 concurrent streams of 300 tokens", ok,
            "; ".join(f"#{i}: HTTP {r[0]} {r[1]} tok finish={r[2]} done at +{r[4] - t0:.2f}s"
                      for i, r in sorted(res.items())) + " (served one at a time)", required=True)

    # --- official openai client ----------------------------------------------
    try:
        import openai

        cl = openai.OpenAI(base_url=args.url.rstrip("/") + "/v1", api_key="none")
        n, text, fin = 0, "", None
        for ch in cl.completions.create(model=M, prompt="hello world", max_tokens=12, stream=True):
            n += 1
            text += ch.choices[0].text if ch.choices else ""
            fin = (ch.choices[0].finish_reason if ch.choices else None) or fin
        rep.add("openai client: completions stream", len(text) == 12 and fin == "length",
                f"openai {openai.__version__}: {n} chunks, text={text!r}, finish={fin}", required=True)
        n, text = 0, ""
        for ch in cl.chat.completions.create(model=M, messages=[{"role": "user", "content": "hi"}],
                                             max_tokens=5, stream=True):
            n += 1
            text += (ch.choices[0].delta.content or "") if ch.choices else ""
        rep.add("openai client: chat stream", len(text) == 5, f"{n} chunks, text={text!r}", required=True)
    except Exception as e:  # noqa: BLE001
        rep.add("openai client", False, f"{type(e).__name__}: {e}", required=True)

    print("\n| feature | result | detail |\n|---|---|---|")
    for f, tag, d in rep.rows:
        print(f"| {f} | {tag} | {d.replace('|', '/')} |")
    if rep.failed:
        print(f"\nFAILED: {rep.failed}")
        return 1
    print("\nall required checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
