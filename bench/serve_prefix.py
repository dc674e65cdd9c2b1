#!/usr/bin/env python3
"""Prefix reuse of `qwen serve`: time to first token of a chat's second turn against its first.

Turn 1: a user message of about --prompt-tokens tokens (WikiText-2 text) and a greedy reply of
up to --reply-tokens. Turn 2: the same history, the reply, and a short new question. Each turn
is streamed; time to first token is from sending the request to its first content delta.
Printed: both times and their ratio (the issue's bar: turn 2 <= 15% of turn 1), and the
server's prefix-cache hits from /metrics.

Standard library only. Usage:
  python3 bench/serve_prefix.py --url http://127.0.0.1:PORT --text FILE [--prompt-tokens 1500]
"""

import argparse
import http.client
import json
import sys
import time
import urllib.parse
import urllib.request


def chat(url, messages, max_tokens):
    """(time to first token, text) of one streamed greedy chat completion."""
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    body = {"messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        sys.exit(f"error: status {resp.status}: {resp.read()[:500]!r}")
    first, text, usage = None, [], None
    for raw in resp:
        line = raw.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        event = json.loads(line[6:])
        if "error" in event:
            sys.exit(f"error: {event['error']}")
        if event.get("usage"):
            usage = event["usage"]
        for c in event.get("choices", []):
            delta = c.get("delta", {}).get("content")
            if delta:
                first = first if first is not None else time.perf_counter() - start
                text.append(delta)
    conn.close()
    return first, "".join(text), usage


def metric(url, name):
    for line in urllib.request.urlopen(url + "/metrics", timeout=30).read().decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--text", required=True, help="a text file the first message is cut from")
    ap.add_argument("--prompt-tokens", type=int, default=1500)
    ap.add_argument("--reply-tokens", type=int, default=64)
    a = ap.parse_args()
    # ~4.3 characters per token in English prose for this tokenizer; the usage reports the truth.
    words = open(a.text).read().split()
    message = "Summarize this text.\n\n" + " ".join(words[: int(a.prompt_tokens * 0.78)])
    history = [{"role": "user", "content": message}]
    ttft1, reply, usage1 = chat(a.url, history, a.reply_tokens)
    history += [{"role": "assistant", "content": reply},
                {"role": "user", "content": "Now give it a title."}]
    ttft2, _, usage2 = chat(a.url, history, a.reply_tokens)
    print(f"turn 1: {usage1['prompt_tokens']} prompt tokens, time to first token {ttft1:.3f} s")
    print(f"turn 2: {usage2['prompt_tokens']} prompt tokens, time to first token {ttft2:.3f} s")
    print(f"turn 2 / turn 1: {ttft2 / ttft1:.1%} (bar: <= 15%)")
    print(f"prefix-cache hits: {metric(a.url, 'qwen_prefix_cache_hits_total')}")


if __name__ == "__main__":
    main()
