#!/usr/bin/env python3
"""Writes the prompt sets of `qwen bench --profile decode-sets` (standard library only).

    python3 bench/decode-sets/make_sets.py [--data-dir ../shared/data]

Run from the repository's root. It writes, next to this script:

- code.jsonl: 8 functions of this repository (6 Rust, 2 Python), each cut whole from its
  source file (doc comments included) with an instruction to change one thing. The
  off-by-one prompt's function gets its bug here (SNIPPETS, `mutate`), so the instruction
  has something to fix.
- extract.jsonl: 8 passages of WikiText-2's test split (DATA_DIR/wikitext2_test.txt), cut
  as described in `passages`, with an extraction or summarization instruction each.
- aicas.jsonl: one entry naming the challenge prompt, which the bench reads from its
  --data-dir (the file is not copied here).
- chat.jsonl: 8 short open questions.

Every line is one JSON object: `id`, `chat` (true: the text is one user message, rendered
with the Qwen2.5 ChatML template; false: a plain prompt), `text` (or `file`, a name in the
data directory), and `source` (where the text came from). The output depends only on the
data file and the repository's sources: the same inputs give the same bytes. The committed
JSONL files are the sets; the bench embeds them when it is compiled, so rerunning this
script after the sources moved changes the sets (review the diff).
"""

import argparse
import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# (id, path, first line of the function as it starts in the file, language, instruction,
# mutate: (old, new, what) — old replaced once by new in the function, to plant the bug the
# instruction names).
SNIPPETS = [
    (
        "rename-sorted",
        "runtime/src/bench/stats.rs",
        "    pub fn of(values: &[f64]) -> Summary {",
        "rust",
        "Rename the variable `sorted` to `ascending` everywhere in this function. "
        "Change nothing else.",
        None,
    ),
    (
        "add-param-default-system",
        "runtime/src/chat.rs",
        "pub fn render(messages: &[ChatMessage], add_generation_prompt: bool) -> String {",
        "rust",
        "Add a parameter `default_system: &str` to this function and use it instead of "
        "`DEFAULT_SYSTEM_PROMPT` when the first message is not a system message. "
        "Update the doc comment.",
        None,
    ),
    (
        "fix-off-by-one",
        "codegen/src/quant/gptq.rs",
        "fn invert_lower(l: &[f64], n: usize) -> Vec<f64> {",
        "rust",
        "The loop at the end that copies each block into `out` has an off-by-one: it skips "
        "the first row of every block. Fix it and show the corrected function.",
        (
            "        for i in j0..n {\n            out[",
            "        for i in j0 + 1..n {\n            out[",
            "the copy loop's `for i in j0..n` changed to `for i in j0 + 1..n`",
        ),
    ),
    (
        "add-empty-context-check",
        "runtime/src/eval/tasks.rs",
        "fn parse_line(task: Task, line: &str, doc_id: usize) -> Result<Doc, String> {",
        "rust",
        "Also refuse a document whose context is empty or only whitespace, with an error "
        "message in the style of the two existing checks. Show the whole function.",
        None,
    ),
    (
        "tuple-to-struct",
        "runtime/src/score.rs",
        "pub fn speed_from_bench(bench: &Value) -> Result<(String, f64, f64, f64), ScoreError> {",
        "rust",
        "Return a struct `BenchSpeed { profile: String, prefill_tok_s: f64, decode_tok_s: f64, "
        "memory_mb: f64 }` instead of the tuple. Write the struct and the changed function.",
        None,
    ),
    (
        "count-replacements",
        "runtime/src/tokenizer/stream.rs",
        "    pub fn push(&mut self, id: u32) -> Result<String, TokenizerError> {",
        "rust",
        "Count the replacement characters this method emits: add 1 to a new field "
        "`self.replacements: usize` each time one is pushed. Show the changed method.",
        None,
    ),
    (
        "rename-axes",
        "bench/peers/report.py",
        "def chart(rows: list[dict], path: str, title: str) -> None:",
        "python",
        "Rename `ax_p` to `ax_prefill` and `ax_d` to `ax_decode` in this function. "
        "Change nothing else.",
        None,
    ),
    (
        "add-option-n-ctx",
        "bench/quality/llama_eval.py",
        "def main():",
        "python",
        "Add a command-line option `--n-ctx` (an int, default 1024) and use it for both "
        "`n_ctx` and `n_batch` of the `Llama` constructor. Show the whole function.",
        None,
    ),
]

INSTRUCTIONS = [
    "List every year mentioned in the passage, each with what happened in it.",
    "Summarize the passage in 3 sentences.",
    "Extract the names of all the people mentioned in the passage, one per line.",
    "List every place (city, country, region or building) mentioned in the passage.",
    "Give the passage a title, then summarize it in one paragraph.",
    "Extract every number in the passage, each with what it counts or measures.",
    "Rewrite the key facts of the passage as a bulleted list.",
    "In one sentence, what is the passage mainly about? Then quote the sentence of the "
    "passage that best supports your answer.",
]

CHAT = [
    ("story-lighthouse", "Write a short story about a lighthouse keeper who finds a message in a bottle."),
    ("sky-blue", "Explain why the sky is blue."),
    ("learn-language", "What is a good way to learn a new language as an adult?"),
    ("poem-autumn", "Write a short poem about autumn in a city."),
    ("tcp-udp", "What is the difference between TCP and UDP?"),
    ("plan-trip", "Plan a three-day trip to Rome for someone who loves history and food."),
    ("bread", "How do I bake a simple loaf of bread at home?"),
    ("remote-work", "What are the advantages and disadvantages of working from home?"),
]


def commit():
    try:
        out = subprocess.run(
            ["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def cut_function(path, first_line, language):
    """The function whose first line is `first_line`, with the doc comments and attributes
    above it, dedented; and its 1-based line range in the file."""
    lines = open(os.path.join(ROOT, path), encoding="utf-8").read().split("\n")
    starts = [i for i, l in enumerate(lines) if l == first_line]
    if len(starts) != 1:
        sys.exit(f"{path}: {len(starts)} lines are {first_line!r} (want exactly 1)")
    start = starts[0]
    indent = first_line[: len(first_line) - len(first_line.lstrip())]
    if language == "rust":
        end = next(j for j in range(start + 1, len(lines)) if lines[j] == indent + "}")
        above = ("///", "#[")
    else:
        end = start
        for j in range(start + 1, len(lines)):
            l = lines[j]
            if l.strip() and not l.startswith(indent + " ") and not l.startswith(indent + "\t"):
                break
            if l.strip():
                end = j
        above = ("@",)
    while start > 0 and lines[start - 1].startswith(tuple(indent + a for a in above)):
        start -= 1
    body = [l[len(indent):] if l.startswith(indent) else l for l in lines[start : end + 1]]
    return "\n".join(body), (start + 1, end + 1)


def code_set():
    at = commit()
    out = []
    for id_, path, first, language, instruction, mutate in SNIPPETS:
        code, (a, b) = cut_function(path, first, language)
        source = f"{path} lines {a}-{b} at {at}"
        if mutate:
            old, new, what = mutate
            if code.count(old) != 1:
                sys.exit(f"{id_}: the text to mutate occurs {code.count(old)} times")
            code = code.replace(old, new)
            source += f", with {what}"
        text = f"{instruction}\n\n```{language}\n{code}\n```"
        out.append({"id": id_, "chat": True, "text": text, "source": source})
    return out


def detokenize(s):
    """WikiText's tokenization undone, after lm-evaluation-harness's wikitext detokenizer
    (the rules that apply inside a paragraph)."""
    s = s.replace(" @-@ ", "-").replace(" @,@ ", ",").replace(" @.@ ", ".")
    for p in [" : ", " ; ", " . ", " ! ", " ? ", " , "]:
        s = s.replace(p, p[1:])
    s = re.sub(r" ([.,;:!?])$", r"\1", s)
    s = re.sub(r'" ([^"]*?) "', r'"\1"', s)
    s = re.sub(r"\( ([^()]*?) \)", r"(\1)", s)
    s = s.replace(" 's", "'s").replace(" n't", "n't").replace(" 're", "'re")
    s = s.replace(" 'll", "'ll").replace(" 've", "'ve").replace(" 'd ", "'d ")
    return s.strip()


def passages(data_dir, count):
    """`count` paragraphs of wikitext2_test.txt, one from each of `count` equal stretches of
    the file: in each, the first paragraph (a line that is not a heading) of 200-400 words
    after detokenization that names at least 2 distinct years (the first instruction asks
    for them) and comes from an article no earlier passage came from."""
    path = os.path.join(data_dir, "wikitext2_test.txt")
    lines = open(path, encoding="utf-8").read().split("\n")
    title, titles = None, []
    for l in lines:
        m = re.fullmatch(r" = ([^=].*?) = ", l)
        if m:
            title = detokenize(m.group(1))
        titles.append(title)
    chosen, used = [], set()
    for k in range(count):
        for i in range(k * len(lines) // count, len(lines)):
            raw = lines[i].strip()
            if not raw or raw.startswith("=") or titles[i] in used:
                continue
            text = detokenize(raw)
            words = len(text.split())
            years = set(re.findall(r"\b(1[0-9]{3}|20[0-9]{2})\b", text))
            if 200 <= words <= 400 and len(years) >= 2:
                chosen.append((i + 1, titles[i], text, words))
                used.add(titles[i])
                break
        else:
            sys.exit(f"no passage found after line {k * len(lines) // count + 1}")
    return chosen


def extract_set(data_dir):
    out = []
    for n, ((line, title, text, words), instruction) in enumerate(
        zip(passages(data_dir, len(INSTRUCTIONS)), INSTRUCTIONS)
    ):
        out.append({
            "id": f"wikitext-line-{line}",
            "chat": True,
            "text": f"Read this passage:\n\n{text}\n\n{instruction}",
            "source": f"wikitext2_test.txt line {line} (article \"{title}\", {words} words), "
                      "detokenized",
        })
    return out


def write(name, rows):
    path = os.path.join(HERE, name)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"{path}: {len(rows)} prompts")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default="../shared/data",
                    help="the directory of wikitext2_test.txt [default: ../shared/data]")
    a = ap.parse_args()
    write("code.jsonl", code_set())
    write("extract.jsonl", extract_set(a.data_dir))
    write("aicas.jsonl", [{
        "id": "aicas2025",
        "chat": False,
        "file": "aicas2025_prompt.txt",
        "source": "the AICAS 2025 challenge prompt (the aicas profile's), read from --data-dir",
    }])
    write("chat.jsonl", [
        {"id": id_, "chat": True, "text": text, "source": "written for this set"}
        for id_, text in CHAT
    ])


if __name__ == "__main__":
    main()
