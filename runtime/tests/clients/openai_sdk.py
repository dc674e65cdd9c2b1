#!/usr/bin/env python3
"""`qwen serve` through the official `openai` Python package (the version pinned in
requirements.txt beside this file): what an application that uses the SDK sees.

The server is started by someone else (tests/openai_sdk.rs starts the tiny-model `qwen`
twice). Environment:
  QWENC_OPENAI_BASE_URL    the plain server's base URL, e.g. http://127.0.0.1:8080/v1 (required)
  QWENC_OPENAI_CONTEXT     the model's context in tokens (`qwen info --json`: max_context;
                           default 256, the tiny model's)
  QWENC_OPENAI_MAX_BODY    the plain server's --max-body-bytes (default 1048576)
  QWENC_OPENAI_KEYED_URL   a second server started with --api-key (optional: the API-key tests
  QWENC_OPENAI_API_KEY     are skipped without these two, and say so)

Run by hand:  QWENC_OPENAI_BASE_URL=http://127.0.0.1:8080/v1 python3 openai_sdk.py -v

The tiny model's text is gibberish: outputs are compared with each other (temperature 0),
never with fixed strings.
"""

import json
import math
import os
import sys
import unittest
import urllib.error
import urllib.request

import httpx2
import openai
from pydantic import BaseModel, Field
from typing import List, Literal

BASE_URL = os.environ.get("QWENC_OPENAI_BASE_URL", "")
CONTEXT = int(os.environ.get("QWENC_OPENAI_CONTEXT", "256"))
MAX_BODY = int(os.environ.get("QWENC_OPENAI_MAX_BODY", str(1 << 20)))
KEYED_URL = os.environ.get("QWENC_OPENAI_KEYED_URL", "")
API_KEY = os.environ.get("QWENC_OPENAI_API_KEY", "")

# Short: the tiny model's context is 256 tokens, and its byte-level vocabulary has few merges.
PROMPT = "The quick brown fox"
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Name a colour."},
]


_clients = {}


def client(base_url=None, api_key="unused"):
    """One SDK client per server and key, as an application keeps one."""
    key = (base_url or BASE_URL, api_key)
    if key not in _clients:
        # No retries: a retry would hide the first answer (the SDK retries 408, 429, 5xx).
        _clients[key] = openai.OpenAI(base_url=key[0], api_key=api_key, max_retries=0, timeout=120)
    return _clients[key]


_model_id = None


def model_id():
    global _model_id
    if _model_id is None:
        _model_id = client().models.list().data[0].id
    return _model_id


_whitespace_bias = None


def whitespace_bias():
    """logit_bias -100 on the single-byte whitespace tokens (found by echoing ids 0-255).

    The JSON grammar lets whitespace go on without bound between any two tokens, and the
    tiny model's random weights prefer it: at temperature 0 every answer is `{` and
    newlines until max_tokens. The bias keeps the test on the schema, not on whitespace.
    """
    global _whitespace_bias
    if _whitespace_bias is None:
        ids = []
        for start in range(0, 256, 64):
            r = client().completions.create(
                model=model_id(), prompt=[[i] for i in range(start, start + 64)], max_tokens=0, echo=True
            )
            ids += [start + ch.index for ch in r.choices if ch.text in (" ", "\n", "\r", "\t")]
        assert ids, "no whitespace token among ids 0-255"
        _whitespace_bias = {str(i): -100 for i in ids}
    return _whitespace_bias


# --- A small JSON-schema validator: the keywords the schemas below use, no more. ------------


def schema_errors(value, schema, path="$"):
    """The ways `value` breaks `schema` (an empty list: it validates)."""
    errors = []
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} is not one of {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        errors.append(f"{path}: {value!r} is not {schema['const']!r}")
    kind = schema.get("type")
    checks = {
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
        "string": lambda v: isinstance(v, str),
        "boolean": lambda v: isinstance(v, bool),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "null": lambda v: v is None,
    }
    if kind is not None:
        if kind not in checks:
            raise ValueError(f"the validator does not know type {kind!r}")
        if not checks[kind](value):
            return errors + [f"{path}: {value!r} is not of type {kind}"]
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                errors.append(f"{path}: required property {name!r} is missing")
        for name, v in value.items():
            if name in props:
                errors += schema_errors(v, props[name], f"{path}.{name}")
            elif schema.get("additionalProperties", True) is False:
                errors.append(f"{path}: property {name!r} is not allowed")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            errors.append(f"{path}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{path}: more than {schema['maxItems']} items")
        for i, v in enumerate(value):
            if "items" in schema:
                errors += schema_errors(v, schema["items"], f"{path}[{i}]")
    if isinstance(value, str):
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{path}: longer than {schema['maxLength']}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: {value} < {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: {value} > {schema['maximum']}")
    return errors


# Every value is bounded (enums, booleans, integers in a range, at most 3 items), so the
# answer ends long before max_tokens whatever the model prefers.
SCHEMA = {
    "type": "object",
    "properties": {
        "ok": {"type": "boolean"},
        "color": {"type": "string", "enum": ["red", "green", "blue"]},
        "n": {"type": "integer", "minimum": 0, "maximum": 99},
        "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}, "maxItems": 3},
    },
    "required": ["ok", "color", "n", "tags"],
    "additionalProperties": False,
}


class Validator(unittest.TestCase):
    """The validator itself: a validator that accepted everything would test nothing."""

    def test_it_accepts_and_refuses(self):
        good = {"ok": True, "color": "red", "n": 7, "tags": ["a", "b"]}
        self.assertEqual(schema_errors(good, SCHEMA), [])
        for bad in [
            [],
            {"ok": True, "color": "red", "n": 7},
            {"ok": 1, "color": "red", "n": 7, "tags": []},
            {"ok": True, "color": "pink", "n": 7, "tags": []},
            {"ok": True, "color": "red", "n": 100, "tags": []},
            {"ok": True, "color": "red", "n": 7.5, "tags": []},
            {"ok": True, "color": "red", "n": 7, "tags": ["c"]},
            {"ok": True, "color": "red", "n": 7, "tags": ["a"] * 4},
            {"ok": True, "color": "red", "n": 7, "tags": [], "extra": 0},
        ]:
            self.assertNotEqual(schema_errors(bad, SCHEMA), [], bad)


# --- Models ---------------------------------------------------------------------------------


class Models(unittest.TestCase):
    def test_models_list_returns_the_model(self):
        page = client().models.list()
        self.assertEqual(len(page.data), 1, page)
        m = page.data[0]
        self.assertEqual(m.object, "model")
        self.assertTrue(m.id)
        self.assertIsInstance(m.created, int)
        # Responses name the same model.
        c = client().completions.create(model="anything", prompt=PROMPT, max_tokens=1, temperature=0)
        self.assertEqual(c.model, m.id)


# --- Chat -----------------------------------------------------------------------------------


class Chat(unittest.TestCase):
    def test_stream_deltas_concatenate_to_the_answer(self):
        c = client()
        whole = c.chat.completions.create(
            model=model_id(), messages=MESSAGES, max_tokens=24, temperature=0
        )
        self.assertEqual(whole.object, "chat.completion")
        answer = whole.choices[0].message
        self.assertEqual(answer.role, "assistant")
        self.assertIn(whole.choices[0].finish_reason, ("stop", "length"))
        self.assertGreater(whole.usage.completion_tokens, 0)

        stream = c.chat.completions.create(
            model=model_id(),
            messages=MESSAGES,
            max_tokens=24,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        deltas, finishes, usage, after_usage = [], [], None, 0
        for chunk in stream:
            self.assertEqual(chunk.object, "chat.completion.chunk")
            if usage is not None:
                after_usage += 1
            if chunk.usage is not None:
                self.assertEqual(chunk.choices, [], "the usage chunk has no choices")
                usage = chunk.usage
                continue
            self.assertEqual(len(chunk.choices), 1)
            ch = chunk.choices[0]
            if ch.delta.content:
                deltas.append(ch.delta.content)
            if ch.finish_reason is not None:
                finishes.append(ch.finish_reason)
        self.assertEqual("".join(deltas), answer.content)
        self.assertEqual(finishes, [whole.choices[0].finish_reason])
        self.assertIsNotNone(usage, "stream_options.include_usage gave no usage chunk")
        self.assertEqual(after_usage, 0, "the usage chunk is the last")
        self.assertEqual(usage.prompt_tokens, whole.usage.prompt_tokens)
        self.assertEqual(usage.completion_tokens, whole.usage.completion_tokens)
        self.assertEqual(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens)

    def test_stream_without_include_usage_has_no_usage(self):
        stream = client().chat.completions.create(
            model=model_id(), messages=MESSAGES, max_tokens=8, temperature=0, stream=True
        )
        chunks = list(stream)
        self.assertTrue(chunks)
        self.assertTrue(all(ch.usage is None for ch in chunks))

    def test_json_schema_strict_answer_validates(self):
        schema_format = {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True},
        }
        prompts = ["Answer in JSON.", "Describe a flag.", "Pick a colour and a number."]
        for content in prompts:
            r = client().chat.completions.create(
                model=model_id(),
                messages=[{"role": "user", "content": content}],
                response_format=schema_format,
                max_completion_tokens=120,
                temperature=0,
                logit_bias=whitespace_bias(),
            )
            ch = r.choices[0]
            self.assertEqual(ch.finish_reason, "stop", ch.message.content)
            value = json.loads(ch.message.content)
            self.assertEqual(schema_errors(value, SCHEMA), [], ch.message.content)

    def test_parse_with_a_pydantic_model(self):
        # The SDK's own structured-output helper: it turns the model class into a strict
        # json_schema response_format and parses the answer back into the class.
        class Answer(BaseModel):
            ok: bool
            color: Literal["red", "green", "blue"]
            n: int = Field(ge=0, le=99)
            tags: List[Literal["a", "b"]] = Field(max_length=3)

        r = client().chat.completions.parse(
            model=model_id(),
            messages=[{"role": "user", "content": "Answer in JSON."}],
            response_format=Answer,
            max_tokens=120,
            temperature=0,
            logit_bias=whitespace_bias(),
        )
        msg = r.choices[0].message
        self.assertEqual(r.choices[0].finish_reason, "stop", msg.content)
        self.assertIsInstance(msg.parsed, Answer, msg.content)
        self.assertEqual(msg.parsed, Answer.model_validate_json(msg.content))

    def test_json_object_answer_is_an_object(self):
        prompts = ["Answer in JSON.", "Give me an object.", "JSON please."]
        ended = 0
        for content in prompts:
            r = client().chat.completions.create(
                model=model_id(),
                messages=[{"role": "user", "content": content}],
                response_format={"type": "json_object"},
                max_tokens=CONTEXT // 2,
                temperature=0,
                logit_bias=whitespace_bias(),
            )
            ch = r.choices[0]
            text = ch.message.content
            if ch.finish_reason == "stop":
                self.assertIsInstance(json.loads(text), dict, text)
                ended += 1
            else:
                # Cut by max_tokens (an object's strings are unbounded): still an object's start.
                self.assertEqual(ch.finish_reason, "length")
                self.assertTrue(text.lstrip().startswith("{"), text)
        self.assertGreater(ended, 0, "no json_object answer ended before max_tokens")

    def test_tools_are_refused_with_unsupported_value(self):
        tools = [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "The weather in a city.",
                    "parameters": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}},
                        "required": ["city"],
                    },
                },
            }
        ]
        with self.assertRaises(openai.BadRequestError) as cm:
            client().chat.completions.create(model=model_id(), messages=MESSAGES, tools=tools)
        e = cm.exception
        self.assertEqual(e.status_code, 400)
        self.assertEqual(e.code, "unsupported_value")
        self.assertEqual(e.param, "tools")
        self.assertEqual(e.type, "invalid_request_error")
        self.assertEqual(e.body["param"], "tools")
        self.assertIn("tools", e.message)

    def test_no_tools_is_accepted(self):
        # What a client that always sends its (empty) tool list and tool_choice "none" gets.
        r = client().chat.completions.create(
            model=model_id(),
            messages=MESSAGES,
            tools=[],
            tool_choice="none",
            max_tokens=4,
            temperature=0,
        )
        self.assertIsNone(r.choices[0].message.tool_calls)


# --- Completions ----------------------------------------------------------------------------


def check_logprobs_shape(test, lp, k):
    n = len(lp.tokens)
    test.assertEqual(len(lp.token_logprobs), n)
    test.assertEqual(len(lp.top_logprobs), n)
    test.assertEqual(len(lp.text_offset), n)
    test.assertEqual(lp.text_offset, sorted(lp.text_offset))
    for i in range(n):
        tl, top = lp.token_logprobs[i], lp.top_logprobs[i]
        if tl is None:
            test.assertIsNone(top)
            continue
        test.assertLessEqual(tl, 1e-6)
        test.assertIsInstance(top, dict)
        test.assertTrue(1 <= len(top) <= k, top)
        test.assertTrue(all(v <= 1e-6 for v in top.values()), top)
        # lm-eval's is_greedy compares a token's logprob with the best of its top_logprobs.
        test.assertGreaterEqual(max(top.values()) + 1e-5, tl, (i, top, tl))
        if lp.tokens[i] in top:
            test.assertAlmostEqual(top[lp.tokens[i]], tl, delta=1e-5)


class Completions(unittest.TestCase):
    def test_stream_text_equals_the_answer(self):
        c = client()
        whole = c.completions.create(model=model_id(), prompt=PROMPT, max_tokens=24, temperature=0)
        self.assertEqual(whole.object, "text_completion")
        stream = c.completions.create(
            model=model_id(),
            prompt=PROMPT,
            max_tokens=24,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        text, usage = [], None
        for chunk in stream:
            if chunk.usage is not None:
                self.assertEqual(chunk.choices, [])
                usage = chunk.usage
                continue
            text += [ch.text for ch in chunk.choices]
        self.assertEqual("".join(text), whole.choices[0].text)
        self.assertIsNotNone(usage)
        self.assertEqual(usage.completion_tokens, whole.usage.completion_tokens)
        self.assertEqual(usage.prompt_tokens, whole.usage.prompt_tokens)

    def test_logprobs_and_echo(self):
        c = client()
        k = 3
        plain = c.completions.create(
            model=model_id(), prompt=PROMPT, max_tokens=6, temperature=0, logprobs=k
        )
        echoed = c.completions.create(
            model=model_id(), prompt=PROMPT, max_tokens=6, temperature=0, logprobs=k, echo=True
        )
        prompt_only = c.completions.create(
            model=model_id(), prompt=PROMPT, max_tokens=0, temperature=0, logprobs=k, echo=True
        )
        p, e, z = (r.choices[0] for r in (plain, echoed, prompt_only))
        for ch in (p, e, z):
            check_logprobs_shape(self, ch.logprobs, k)
        n_prompt = plain.usage.prompt_tokens

        # max_tokens 0 with echo: the prompt alone, each token after the first with a logprob.
        self.assertEqual(z.text, PROMPT)
        self.assertEqual(prompt_only.usage.completion_tokens, 0)
        self.assertEqual(len(z.logprobs.tokens), n_prompt)
        self.assertEqual("".join(z.logprobs.tokens), PROMPT)
        self.assertIsNone(z.logprobs.token_logprobs[0])
        self.assertTrue(all(x is not None for x in z.logprobs.token_logprobs[1:]))
        self.assertEqual(z.logprobs.text_offset[0], 0)

        # Echo: the prompt's entries, then the generated ones, as returned without echo.
        self.assertEqual(e.text, PROMPT + p.text)
        self.assertEqual(e.logprobs.tokens, z.logprobs.tokens + p.logprobs.tokens)
        for a, b in zip(e.logprobs.token_logprobs[1:n_prompt], z.logprobs.token_logprobs[1:]):
            self.assertAlmostEqual(a, b, delta=1e-4)
        gen = e.logprobs.token_logprobs[n_prompt:]
        self.assertEqual(len(gen), len(p.logprobs.token_logprobs))
        for a, b in zip(gen, p.logprobs.token_logprobs):
            self.assertAlmostEqual(a, b, delta=1e-4)
        # Generated at temperature 0: each token is the best of its top_logprobs, to the bit
        # (lm-eval's is_greedy tests `token_logprob != max(top_logprobs.values())`).
        for tl, top in zip(p.logprobs.token_logprobs, p.logprobs.top_logprobs):
            self.assertEqual(tl, max(top.values()), top)
        self.assertEqual(p.logprobs.text_offset[0], 0)
        self.assertEqual(e.logprobs.text_offset[n_prompt], len(PROMPT))

    def test_lm_eval_loglikelihood_request(self):
        # lm-eval's local-completions: a batch of prompts, echo, max_tokens 1, logprobs 1;
        # it sums token_logprobs[ctxlen:-1] and checks is_greedy against top_logprobs.
        c = client()
        context, conts = "Question: is it red? Answer:", [" yes", " no"]
        ctx = c.completions.create(
            model=model_id(), prompt=context, max_tokens=0, logprobs=1, echo=True, temperature=0
        )
        ctxlen = len(ctx.choices[0].logprobs.tokens)
        batch = c.completions.create(
            model=model_id(),
            prompt=[context + x for x in conts],
            max_tokens=1,
            logprobs=1,
            echo=True,
            temperature=0,
            seed=1234,
        )
        self.assertEqual([ch.index for ch in batch.choices], [0, 1])
        for x, ch in zip(conts, batch.choices):
            lp = ch.logprobs
            check_logprobs_shape(self, lp, 1)
            alone = c.completions.create(
                model=model_id(), prompt=context + x, max_tokens=0, logprobs=1, echo=True, temperature=0
            ).choices[0].logprobs
            self.assertEqual(len(lp.tokens), len(alone.tokens) + 1, "the prompt's tokens + 1")
            self.assertEqual(lp.tokens[:-1], alone.tokens)
            # The context tokenizes the same inside the prompt (it ends before the space).
            self.assertEqual(lp.tokens[:ctxlen], ctx.choices[0].logprobs.tokens)
            scored = lp.token_logprobs[ctxlen:-1]
            self.assertTrue(scored)
            self.assertAlmostEqual(sum(scored), sum(alone.token_logprobs[ctxlen:]), delta=1e-3)
            self.assertTrue(all(math.isfinite(v) for v in scored))
            # lm-eval's is_greedy, position by position: exact equality with the best of
            # top_logprobs must hold exactly where the token is the best one (logprobs 1:
            # top_logprobs holds the best token only).
            for i in range(ctxlen, len(lp.tokens) - 1):
                tl, top = lp.token_logprobs[i], lp.top_logprobs[i]
                self.assertEqual(tl == max(top.values()), lp.tokens[i] in top, (i, tl, top))

    def test_token_id_prompt(self):
        ids = [40, 41, 42, 43, 44]
        r = client().completions.create(
            model=model_id(), prompt=ids, max_tokens=0, logprobs=0, echo=True, temperature=0
        )
        lp = r.choices[0].logprobs
        self.assertEqual(len(lp.tokens), len(ids))
        self.assertEqual(r.usage.prompt_tokens, len(ids))
        self.assertEqual(r.choices[0].text, "".join(lp.tokens))


# --- Errors ---------------------------------------------------------------------------------


class Errors(unittest.TestCase):
    def assertApiError(self, cm, cls, status, code, param):
        e = cm.exception
        self.assertIsInstance(e, cls)
        self.assertEqual(e.status_code, status, e)
        self.assertEqual(e.code, code, e)
        self.assertEqual(e.param, param, e)
        # e.body is the "error" object of the JSON body.
        self.assertIsInstance(e.body, dict, e)
        self.assertEqual(e.body["code"], code)
        self.assertTrue(e.body["message"])

    def test_bad_temperature(self):
        for create in (
            lambda: client().completions.create(model=model_id(), prompt=PROMPT, temperature=3),
            lambda: client().chat.completions.create(model=model_id(), messages=MESSAGES, temperature=3),
        ):
            with self.assertRaises(openai.BadRequestError) as cm:
                create()
            self.assertApiError(cm, openai.BadRequestError, 400, "invalid_value", "temperature")

    def test_n_2(self):
        for create in (
            lambda: client().completions.create(model=model_id(), prompt=PROMPT, n=2),
            lambda: client().chat.completions.create(model=model_id(), messages=MESSAGES, n=2),
        ):
            with self.assertRaises(openai.BadRequestError) as cm:
                create()
            self.assertApiError(cm, openai.BadRequestError, 400, "unsupported_value", "n")

    def test_context_overflow(self):
        c = client()
        cases = [
            # A prompt of more token ids than the context.
            (lambda: c.completions.create(model=model_id(), prompt=[40] * (CONTEXT + 1), max_tokens=1), "prompt"),
            # A short prompt, max_tokens past the context.
            (lambda: c.completions.create(model=model_id(), prompt=PROMPT, max_tokens=CONTEXT), "max_tokens"),
            # A conversation longer than the context (each "0 " is a token at least).
            (
                lambda: c.chat.completions.create(
                    model=model_id(), messages=[{"role": "user", "content": "0 " * CONTEXT}]
                ),
                "messages",
            ),
            (lambda: c.chat.completions.create(model=model_id(), messages=MESSAGES, max_tokens=CONTEXT), "max_tokens"),
        ]
        for create, param in cases:
            with self.assertRaises(openai.BadRequestError) as cm:
                create()
            self.assertApiError(cm, openai.BadRequestError, 400, "context_length_exceeded", param)

    def test_unknown_route_and_wrong_method(self):
        with self.assertRaises(openai.NotFoundError) as cm:
            client().get("/no/such/route", cast_to=httpx2.Response)
        self.assertApiError(cm, openai.NotFoundError, 404, "unknown_route", None)
        with self.assertRaises(openai.APIStatusError) as cm:
            client().get("/completions", cast_to=httpx2.Response)
        self.assertApiError(cm, openai.APIStatusError, 405, "method_not_allowed", None)
        # Outside /v1, with plain httpx2 (the SDK's HTTP client).
        r = httpx2.get(BASE_URL.rstrip("/").rsplit("/v1", 1)[0] + "/nope", timeout=30)
        self.assertEqual(r.status_code, 404)
        self.assertEqual(r.headers["content-type"], "application/json")
        self.assertEqual(r.json()["error"]["code"], "unknown_route")

    def test_oversized_body_gets_413(self):
        pad = "x" * (MAX_BODY + 1)
        with self.assertRaises(openai.APIStatusError) as cm:
            client().completions.create(
                model=model_id(), prompt=PROMPT, max_tokens=1, extra_body={"padding": pad}
            )
        self.assertApiError(cm, openai.APIStatusError, 413, "body_too_large", None)
        # urllib writes the whole body before it reads: it still gets the JSON error.
        body = json.dumps({"prompt": PROMPT, "padding": pad}).encode()
        req = urllib.request.Request(
            BASE_URL.rstrip("/") + "/completions",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with self.assertRaises(urllib.error.HTTPError) as ucm:
            urllib.request.urlopen(req, timeout=60)
        self.assertEqual(ucm.exception.code, 413)
        self.assertEqual(json.loads(ucm.exception.read())["error"]["code"], "body_too_large")


@unittest.skipUnless(KEYED_URL and API_KEY, "QWENC_OPENAI_KEYED_URL / QWENC_OPENAI_API_KEY not set")
class ApiKey(unittest.TestCase):
    def test_wrong_key_is_an_authentication_error(self):
        for create in (
            lambda c: c.models.list(),
            lambda c: c.chat.completions.create(model="m", messages=MESSAGES, max_tokens=1),
        ):
            with self.assertRaises(openai.AuthenticationError) as cm:
                create(client(KEYED_URL, "not-" + API_KEY))
            e = cm.exception
            self.assertEqual(e.status_code, 401)
            self.assertEqual(e.code, "invalid_api_key")
            self.assertIsNone(e.param)

    def test_no_key_gets_401_json(self):
        r = httpx2.get(KEYED_URL.rstrip("/") + "/models", timeout=30)
        self.assertEqual(r.status_code, 401)
        self.assertEqual(r.json()["error"]["code"], "invalid_api_key")

    def test_right_key_is_served(self):
        c = client(KEYED_URL, API_KEY)
        mid = c.models.list().data[0].id
        self.assertEqual(mid, model_id())
        r = c.chat.completions.create(model=mid, messages=MESSAGES, max_tokens=8, temperature=0)
        plain = client().chat.completions.create(
            model=mid, messages=MESSAGES, max_tokens=8, temperature=0
        )
        # The same executable: the same answer.
        self.assertEqual(r.choices[0].message.content, plain.choices[0].message.content)


def main():
    if not BASE_URL:
        sys.exit("QWENC_OPENAI_BASE_URL is not set (e.g. http://127.0.0.1:8080/v1)")
    print(f"openai {openai.__version__} against {BASE_URL} (context {CONTEXT}, max body {MAX_BODY})")
    result = unittest.main(module=__name__, argv=[sys.argv[0], *sys.argv[1:]], exit=False).result
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    skipped = len(result.skipped)
    passed = result.testsRun - failed - skipped
    print(f"openai_sdk: {passed} passed, {failed} failed, {skipped} skipped")
    sys.exit(1 if failed or result.testsRun == 0 else 0)


if __name__ == "__main__":
    main()
