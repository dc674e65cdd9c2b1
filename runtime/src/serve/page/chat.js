// qwen serve's chat page: keeps the conversation in the page and streams each answer from
// POST /v1/chat/completions. Text from the model or the server is only ever inserted with
// textContent, never as HTML.
'use strict';

const $ = (id) => document.getElementById(id);
const KEY_STORE = 'qwen-api-key';

const conversation = $('conversation');
const composer = $('composer');
const message = $('message');
const sendButton = $('send');
const stopButton = $('stop');
const statusLine = $('status');
const keyForm = $('key-form');

/** The conversation so far, as OpenAI messages (the system prompt is added per request). */
let messages = [];
/** The AbortController of the answer being streamed, if one is. */
let controller = null;
/** What to do once the user has given an API key (the request that got 401). */
let afterKey = null;
/** Counts "New chat" clicks, so that an answer aborted by one is not kept in the next chat. */
let chatNumber = 0;

/** An error with the OpenAI error's code (null for network errors and broken streams). */
class ApiError extends Error {
  constructor(message, code = null) {
    super(message);
    this.code = code;
  }
}

function headers() {
  const h = { 'Content-Type': 'application/json' };
  const key = sessionStorage.getItem(KEY_STORE);
  if (key) h.Authorization = 'Bearer ' + key;
  return h;
}

/** The ApiError of a non-2xx response: its {"error": {"message", "code"}} when it has one. */
async function errorOf(resp) {
  const text = await resp.text();
  try {
    const e = JSON.parse(text).error;
    if (e && e.message) return new ApiError(e.message, e.code || null);
  } catch (_) { /* not JSON: fall through */ }
  return new ApiError(`HTTP ${resp.status} ${resp.statusText}`.trim());
}

/** Appends a message to the conversation; returns its text element. */
function addMessage(role, text) {
  const item = document.createElement('article');
  item.className = 'msg ' + role;
  const who = document.createElement('h2');
  who.className = 'who';
  who.textContent = { user: 'You', assistant: 'Assistant', error: 'Error' }[role];
  const body = document.createElement('p');
  body.className = 'text';
  body.textContent = text;
  item.append(who, body);
  conversation.append(item);
  item.scrollIntoView({ block: 'end' });
  return body;
}

function setBusy(busy) {
  document.body.dataset.busy = busy ? 'true' : 'false';
  conversation.setAttribute('aria-busy', busy ? 'true' : 'false');
  sendButton.disabled = busy;
  stopButton.disabled = !busy;
}

/** Shows the key form with the server's reason; `then` runs once a key is saved. */
function askForKey(reason, then) {
  afterKey = then;
  $('key-reason').textContent = reason;
  keyForm.hidden = false;
  $('api-key').focus();
}

keyForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(KEY_STORE, $('api-key').value.trim());
  $('api-key').value = '';
  keyForm.hidden = true;
  const then = afterKey;
  afterKey = null;
  if (then) then();
  if (then !== loadModel && $('model').textContent === '') loadModel();
});

/** The number in an input, or undefined when it is empty (the server's default then). */
function numberOf(id) {
  const v = $(id).value.trim();
  return v === '' ? undefined : Number(v);
}

/**
 * Reads an SSE response: calls onChunk with each `data:` JSON, returns at `[DONE]`.
 * A `{"error": ...}` frame (a failure after the headers were sent) is thrown.
 */
async function readEvents(resp, onChunk) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) throw new ApiError('the stream ended before [DONE]');
    // stream: true keeps a character split across two reads whole.
    buf += decoder.decode(value, { stream: true });
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl).replace(/\r$/, '');
      buf = buf.slice(nl + 1);
      if (!line.startsWith('data:')) continue; // blank separators, comments
      const data = line.slice(5).trim();
      if (data === '[DONE]') {
        reader.cancel().catch(() => {});
        return;
      }
      const v = JSON.parse(data);
      if (v.error) throw new ApiError(v.error.message, v.error.code || null);
      onChunk(v);
    }
  }
}

/** Sends the conversation plus `text` and streams the answer into the page. */
async function send(text) {
  const chat = chatNumber;
  const userItem = addMessage('user', text).parentElement;
  messages.push({ role: 'user', content: text });
  const system = $('system').value.trim();
  const body = {
    messages: (system ? [{ role: 'system', content: system }] : []).concat(messages),
    stream: true,
    temperature: numberOf('temperature'),
    max_tokens: numberOf('max-tokens'),
  };
  const answer = addMessage('assistant', '');
  const answerItem = answer.parentElement;
  answerItem.dataset.state = 'streaming';
  let reply = '';
  let finish = null;
  controller = new AbortController();
  setBusy(true);
  statusLine.textContent = 'Generating…';
  try {
    const resp = await fetch('/v1/chat/completions', {
      method: 'POST',
      headers: headers(),
      body: JSON.stringify(body),
      signal: controller.signal,
    });
    if (!resp.ok) throw await errorOf(resp);
    await readEvents(resp, (chunk) => {
      const choice = chunk.choices && chunk.choices[0];
      if (!choice) return; // the usage chunk
      if (choice.delta && choice.delta.content) {
        reply += choice.delta.content;
        answer.textContent = reply;
        answerItem.scrollIntoView({ block: 'end' });
      }
      if (choice.finish_reason) finish = choice.finish_reason;
    });
    answerItem.dataset.state = 'done';
    statusLine.textContent = finish === 'length' ? 'Stopped at max tokens.' : '';
  } catch (e) {
    const stopped = e.name === 'AbortError';
    answerItem.dataset.state = stopped ? 'stopped' : 'error';
    statusLine.textContent = stopped ? 'Stopped.' : '';
    if (reply === '' && chat === chatNumber) {
      // Nothing was answered: take the message back (into the box) so it can be resent.
      messages.pop();
      userItem.remove();
      answerItem.remove();
      if (message.value === '') message.value = text;
    }
    if (e.code === 'invalid_api_key') {
      askForKey(e.message, () => { message.value = ''; send(text); });
    } else if (!stopped) {
      // fetch's own TypeError (server unreachable) has a message too.
      addMessage('error', e.message || String(e)).parentElement.dataset.state = 'error';
    }
  } finally {
    controller = null;
    setBusy(false);
  }
  // A partial answer (stopped, or cut by an error) stays in the conversation as it is shown.
  if (reply !== '' && chat === chatNumber) messages.push({ role: 'assistant', content: reply });
}

composer.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const text = message.value;
  if (controller || text.trim() === '') return;
  message.value = '';
  send(text);
});

// Enter sends; Shift+Enter (and Enter while an input method composes) inserts a new line.
message.addEventListener('keydown', (ev) => {
  if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
    ev.preventDefault();
    composer.requestSubmit();
  }
});

stopButton.addEventListener('click', () => {
  if (controller) controller.abort();
});

$('new-chat').addEventListener('click', () => {
  chatNumber += 1;
  if (controller) controller.abort();
  messages = [];
  conversation.replaceChildren();
  statusLine.textContent = '';
  message.focus();
});

/** Shows the served model's name; the first request, so a needed key is asked for at once. */
async function loadModel() {
  try {
    const resp = await fetch('/v1/models', { headers: headers() });
    if (!resp.ok) throw await errorOf(resp);
    const list = await resp.json();
    $('model').textContent = list.data && list.data[0] ? list.data[0].id : '';
  } catch (e) {
    if (e.code === 'invalid_api_key') askForKey(e.message, loadModel);
    else statusLine.textContent = 'Cannot reach the server: ' + (e.message || e);
  }
}

setBusy(false);
loadModel();
message.focus();
