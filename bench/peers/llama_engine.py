"""The aicas profile on llama.cpp, through llama-cpp-python's low-level API (the C API 1:1).

Prefill: clear the KV cache, `llama_decode` of the whole prompt (llama.cpp's default batch
sizes: n_batch 2048, n_ubatch 512), logits of the last position only. Generation: the same
prefill, then greedy sampling with llama.cpp's own greedy sampler and one `llama_decode` per
token, ignoring EOS, until exactly N tokens are sampled (N - 1 single-token decodes, as
transformers' generate and qwen do: the last token is not fed back).

usage: llama_engine.py GGUF LABEL OUT_JSON --threads N --runs N [--new-tokens N]
"""

import argparse
import ctypes
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import aicas  # noqa: E402


def weight_bytes_per_token(path: str) -> tuple[int, dict]:
    """GGUF tensor bytes minus token_embd (decode reads one row of it), unless the model has
    no output.weight (then token_embd is the lm_head and is read whole)."""
    from gguf import GGUFReader

    reader = GGUFReader(path)
    sizes = {t.name: int(t.n_bytes) for t in reader.tensors}
    types = {}
    for t in reader.tensors:
        name = t.tensor_type.name
        types[name] = types.get(name, 0) + int(t.n_bytes)
    total = sum(sizes.values())
    tied = "output.weight" not in sizes
    per_token = total if tied else total - sizes.get("token_embd.weight", 0)
    return per_token, {"tensor_bytes": total, "bytes_by_type": types, "tied": tied}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("gguf")
    p.add_argument("label")
    p.add_argument("out")
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--new-tokens", type=int, default=50)
    p.add_argument("--prompt-file", default=aicas.PROMPT_FILE)
    a = p.parse_args()
    if a.runs < 1 or a.new_tokens < 2 or a.threads < 1:
        raise SystemExit("llama_engine: --runs >= 1, --new-tokens >= 2 and --threads >= 1 please")
    if not os.path.isfile(a.gguf):
        raise SystemExit(f"llama_engine: no GGUF at {a.gguf}")
    aicas.set_threads_env(a.threads)
    per_token, gguf_info = weight_bytes_per_token(a.gguf)

    import llama_cpp as L

    # llama.cpp's own log: warnings and errors only (ggml.h: WARN = 3, ERROR = 4, CONT = 5
    # continues the previous line). The binding's default logger prints INFO too.
    shown = [False]

    @L.llama_log_callback
    def log(level, text, _user):
        if level != 5:
            shown[0] = level in (3, 4)
        if shown[0]:
            print(text.decode("utf-8", errors="replace"), end="", file=sys.stderr)

    L.llama_log_set(log, ctypes.c_void_p(0))
    engine = f"llama.cpp {a.label}"
    L.llama_backend_init()
    mparams = L.llama_model_default_params()
    model = L.llama_model_load_from_file(a.gguf.encode(), mparams)
    if not model:
        raise SystemExit(f"llama_engine: llama.cpp cannot load {a.gguf}")
    vocab = L.llama_model_get_vocab(model)

    text = aicas.read_prompt(a.prompt_file).encode("utf-8")
    buf = (L.llama_token * (len(text) + 16))()
    n = L.llama_tokenize(vocab, text, len(text), buf, len(buf), False, False)
    if n <= 0:
        raise SystemExit(f"llama_engine: tokenization failed ({n})")
    prompt = (L.llama_token * n)(*buf[:n])

    cparams = L.llama_context_default_params()
    cparams.n_ctx = n + a.new_tokens + 16
    cparams.n_threads = a.threads
    cparams.n_threads_batch = a.threads
    ctx = L.llama_init_from_model(model, cparams)
    if not ctx:
        raise SystemExit("llama_engine: llama.cpp cannot create a context")
    mem = L.llama_get_memory(ctx)

    sampler = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
    L.llama_sampler_chain_add(sampler, L.llama_sampler_init_greedy())

    def decode(tokens, count: int) -> None:
        rc = L.llama_decode(ctx, L.llama_batch_get_one(tokens, count))
        if rc != 0:
            raise SystemExit(f"llama_engine: llama_decode returned {rc}")

    forward_s = []
    for i in range(a.runs):
        L.llama_memory_clear(mem, True)
        t0 = aicas.now()
        decode(prompt, n)
        L.llama_synchronize(ctx)
        if not L.llama_get_logits_ith(ctx, -1):
            raise SystemExit("llama_engine: no logits after the prompt")
        s = aicas.now() - t0
        forward_s.append(s)
        aicas.progress(engine, f"prefill {i + 1}/{a.runs}: {n} tokens in {s:.3f} s")

    gen_s, first_s = [], []
    one = (L.llama_token * 1)()
    for i in range(a.runs):
        L.llama_memory_clear(mem, True)
        L.llama_sampler_reset(sampler)
        t0 = aicas.now()
        decode(prompt, n)
        first = None
        for k in range(a.new_tokens):
            tok = L.llama_sampler_sample(sampler, ctx, -1)
            if first is None:
                first = aicas.now() - t0
            if k + 1 < a.new_tokens:
                one[0] = tok
                decode(one, 1)
        s = aicas.now() - t0
        gen_s.append(s)
        first_s.append(first)
        aicas.progress(
            engine,
            f"decode {i + 1}/{a.runs}: {a.new_tokens} tokens in {s:.3f} s, first after {first:.3f} s",
        )

    data = aicas.result(
        engine=engine,
        prompt_tokens=n,
        new_tokens=a.new_tokens,
        threads=a.threads,
        forward_seconds=forward_s,
        generate_seconds=gen_s,
        first_token_seconds=first_s,
        weight_bytes_per_token=per_token,
        weight_bytes_note="GGUF tensor bytes minus token_embd",
        details={
            "llama_cpp_python": L.__version__,
            "gguf": a.gguf,
            "file_bytes": os.path.getsize(a.gguf),
            "system_info": L.llama_print_system_info().decode(errors="replace").strip(),
            **gguf_info,
        },
    )
    L.llama_sampler_free(sampler)
    L.llama_free(ctx)
    L.llama_model_free(model)
    aicas.write(a.out, data)


if __name__ == "__main__":
    main()
