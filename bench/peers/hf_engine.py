"""The aicas profile on Hugging Face transformers (PyTorch on CPU), as the challenge ran it.

Prefill: `model(input_ids)`, the challenge's plain forward (it computes the logits of every
position, as the challenge's script did). Generation: `generate(max_new_tokens=N,
min_new_tokens=N)` with greedy decoding; `min_new_tokens` suppresses EOS so every generation
has exactly N tokens. The time to the first token comes from a streamer, which transformers
calls once with the prompt and then once per new token.

usage: hf_engine.py MODEL_DIR DTYPE(f32|bf16) OUT_JSON --threads N --runs N [--new-tokens N]
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import aicas  # noqa: E402


class FirstTokenClock:
    """A transformers streamer that notes when the first new token arrives."""

    def __init__(self, start: float):
        self.start = start
        self.calls = 0
        self.first = None

    def put(self, value):
        self.calls += 1
        if self.calls == 2:  # call 1 is the prompt, call 2 the first generated token
            self.first = aicas.now() - self.start

    def end(self):
        pass


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model_dir")
    p.add_argument("dtype", choices=["f32", "bf16"])
    p.add_argument("out")
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--new-tokens", type=int, default=50)
    p.add_argument("--prompt-file", default=aicas.PROMPT_FILE)
    a = p.parse_args()
    if a.runs < 1 or a.new_tokens < 2 or a.threads < 1:
        raise SystemExit("hf_engine: --runs >= 1, --new-tokens >= 2 and --threads >= 1 please")
    aicas.set_threads_env(a.threads)

    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(a.threads)
    engine = f"transformers {a.dtype}"
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[a.dtype]
    model = AutoModelForCausalLM.from_pretrained(a.model_dir, dtype=dtype)
    model.eval()
    tok = AutoTokenizer.from_pretrained(a.model_dir)
    ids = tok(aicas.read_prompt(a.prompt_file), return_tensors="pt", add_special_tokens=False)
    input_ids, mask = ids["input_ids"], ids["attention_mask"]
    n = input_ids.shape[1]

    # Bytes that decode reads per token: every parameter except the embedding table, of
    # which it reads one row (unless the embedding is also the lm_head).
    params = sum(t.numel() * t.element_size() for t in model.parameters())
    emb = model.get_input_embeddings().weight
    tied = emb.data_ptr() == model.get_output_embeddings().weight.data_ptr()
    per_token = params if tied else params - emb.numel() * emb.element_size()

    forward_s = []
    with torch.inference_mode():
        for i in range(a.runs):
            t0 = aicas.now()
            out = model(input_ids)
            s = aicas.now() - t0
            del out
            forward_s.append(s)
            aicas.progress(engine, f"prefill {i + 1}/{a.runs}: {n} tokens in {s:.3f} s")
        gen_s, first_s = [], []
        for i in range(a.runs):
            t0 = aicas.now()
            clock = FirstTokenClock(t0)
            out = model.generate(
                input_ids,
                attention_mask=mask,
                max_new_tokens=a.new_tokens,
                min_new_tokens=a.new_tokens,
                do_sample=False,
                pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
                streamer=clock,
            )
            s = aicas.now() - t0
            got = out.shape[1] - n
            if got != a.new_tokens or clock.first is None:
                raise SystemExit(f"hf_engine: generate gave {got} tokens, expected {a.new_tokens}")
            gen_s.append(s)
            first_s.append(clock.first)
            aicas.progress(
                engine,
                f"decode {i + 1}/{a.runs}: {got} tokens in {s:.3f} s, first after {clock.first:.3f} s",
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
        weight_bytes_note="parameter bytes minus the embedding table" + (" (tied: kept)" if tied else ""),
        details={
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "model_dir": a.model_dir,
            "parameter_bytes": params,
            "prefill_call": "model(input_ids) (logits of every position, as the challenge's script)",
        },
    )
    aicas.write(a.out, data)


if __name__ == "__main__":
    main()
