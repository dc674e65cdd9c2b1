#!/usr/bin/env python3
"""Batched decode of `qwen serve`: N concurrent streaming clients against one.

Each client sends a prompt of exactly --prompt-tokens token ids and streams exactly
--new-tokens greedy tokens (the end-of-text ids get logit_bias -100, so no stream stops early).
A client's decode time runs from its first streamed token to its last, so it excludes the
prefill. Printed:
- one client alone: decode tok/s of each prompt run by itself (the median is the baseline);
- N together: aggregate decode tok/s over the window in which every client decodes (from the
  latest first token to the earliest last one, so no client's prefill falls in it): tokens
  streamed in the window / its length, and the ratio to one client's median;
- whether every client's text equals its prompt's text run alone.

Standard library only. Usage:
  python3 bench/serve_batch.py --url http://127.0.0.1:PORT --ids ids.json [--clients 8]
where ids.json is a list of token-id lists (one per client, each at least --prompt-tokens).
"""

import argparse
import http.client
import json
import statistics
import sys
import threading
import time
import urllib.parse

END_OF_TEXT = [151643, 151645]


def stream(url, prompt, new_tokens):
    """(text, time of the first token, time of the last, time of every token) of one streamed
    completion (one SSE event per token: the server sends each token as it is chosen)."""
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    body = {
        "prompt": prompt,
        "max_tokens": new_tokens,
        "temperature": 0,
        "stream": True,
        "logit_bias": {str(i): -100 for i in END_OF_TEXT},
    }
    conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"status {resp.status}: {resp.read()[:500]!r}")
    text, first, last, times = [], None, None, []
    for raw in resp:
        line = raw.decode().strip()
        if not line.startswith("data: "):
            continue
        data = line[6:]
        if data == "[DONE]":
            break
        event = json.loads(data)
        if "error" in event:
            raise RuntimeError(event["error"])
        now = time.perf_counter()
        first = first if first is not None else now
        last = now
        times.append(now)
        text.append(event["choices"][0]["text"])
    conn.close()
    return "".join(text), first, last, times


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--ids", required=True, help="JSON list of token-id lists")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--json", help="write the figures here")
    a = ap.parse_args()
    ids = json.load(open(a.ids))
    if len(ids) < a.clients or any(len(p) < a.prompt_tokens for p in ids[: a.clients]):
        sys.exit(f"error: need {a.clients} prompts of at least {a.prompt_tokens} ids in {a.ids}")
    prompts = [p[: a.prompt_tokens] for p in ids[: a.clients]]
    n = a.new_tokens

    alone = []
    for i, p in enumerate(prompts):
        text, first, last, _ = stream(a.url, p, n)
        alone.append((text, (n - 1) / (last - first)))
        print(f"alone   client {i}: {alone[-1][1]:7.2f} tok/s decode", flush=True)
    one = statistics.median(r for _, r in alone)

    results = [None] * a.clients
    errors = []

    def client(i):
        try:
            results[i] = stream(a.url, prompts[i], n)
        except Exception as e:  # reported below, the run fails
            errors.append(f"client {i}: {e}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(a.clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        sys.exit("error: " + "; ".join(errors))
    t0 = max(r[1] for r in results)
    t1 = min(r[2] for r in results)
    in_window = sum(sum(1 for t in r[3] if t0 < t <= t1) for r in results)
    if t1 <= t0 or in_window == 0:
        sys.exit("error: the clients never all decoded at once")
    aggregate = in_window / (t1 - t0)
    ttft = statistics.median(r[1] - start for r in results)
    same = [results[i][0] == alone[i][0] for i in range(a.clients)]
    print(f"one client (median of {a.clients}): {one:.2f} tok/s decode")
    print(f"{a.clients} clients together: {aggregate:.2f} tok/s aggregate decode = {aggregate / one:.2f}x one client "
          f"({in_window} tokens in {t1 - t0:.2f} s while all decode); median time to first token {ttft:.2f} s")
    print(f"outputs identical to each prompt run alone: {sum(same)}/{a.clients}")
    if a.json:
        json.dump({"clients": a.clients, "prompt_tokens": a.prompt_tokens, "new_tokens": n,
                   "one_client_tok_s": one, "alone_tok_s": [r for _, r in alone],
                   "aggregate_tok_s": aggregate, "ratio": aggregate / one,
                   "window_s": t1 - t0, "window_tokens": in_window,
                   "median_ttft_s": ttft, "identical": sum(same)}, open(a.json, "w"), indent=1)
    if not all(same):
        sys.exit("error: a client's output differs from its prompt run alone")


if __name__ == "__main__":
    main()
