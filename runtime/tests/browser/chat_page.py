"""The chat page (GET /) in headless Chromium, against a running `qwen serve --api-key KEY`.

Run by tests/chat_page_browser.rs, which starts the server (the tiny model) and passes
--url and --api-key. Checks, in order:

1. The page asks for the key (the server answered 401); a wrong key is refused with the
   server's message; the right one is kept in sessionStorage and the model name appears.
2. A message typed with Shift+Enter inside and sent with Enter streams an answer that
   equals, character for character, the non-streamed answer to the same request (fetched
   here with urllib), system prompt, temperature 0 and max tokens included.
3. A second turn carries the conversation: its answer equals the non-streamed answer to
   the whole conversation.
4. On a phone-sized window nothing overflows sideways; a screenshot is saved (--screenshot).
5. Stop aborts a request and gives its message back.
6. An HTTP error (max tokens past the context: 400 context_length_exceeded) is shown with
   the server's message and the message goes back into the box; "New chat" empties the page.

Exit status 0 when every check holds; otherwise a traceback says which failed.
"""

import argparse
import json
import shutil
import sys
import tempfile
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

SYSTEM = "You are a terse assistant."
MAX_TOKENS = 24


def api(url, key, body):
    """POST /v1/chat/completions without streaming: (status, JSON body)."""
    req = urllib.request.Request(
        url + "/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": "Bearer " + key},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def expected_answer(url, key, messages):
    status, v = api(url, key, {
        "messages": [{"role": "system", "content": SYSTEM}] + messages,
        "temperature": 0,
        "max_tokens": MAX_TOKENS,
    })
    assert status == 200, v
    return v["choices"][0]["message"]["content"]


def browser(user_data_dir, chromium, chromedriver):
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        "--user-data-dir=" + user_data_dir, "--window-size=760,900",
    ]:
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=chromedriver), options=opts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:8080")
    ap.add_argument("--api-key", required=True)
    ap.add_argument("--screenshot", required=True, help="where to save the PNG")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    ap.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args()
    url = args.url.rstrip("/")

    profile = tempfile.mkdtemp(prefix="qwen-chat-page-")
    driver = browser(profile, args.chromium, args.chromedriver)
    try:
        run(driver, url, args)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    print("chat page: every check passed")


def run(driver, url, args):
    wait = WebDriverWait(driver, args.timeout)
    js = driver.execute_script
    by_id = lambda i: driver.find_element(By.ID, i)  # noqa: E731

    def state():
        """The conversation as the page shows it: [(role, data-state, text)]."""
        return js("""return [...document.querySelectorAll('#conversation .msg')].map(
            m => [m.className.replace('msg ', ''), m.dataset.state || '',
                  m.querySelector('.text').textContent]);""")

    def finished():
        wait.until(lambda d: js("return document.body.dataset.busy") == "false"
                   and state() and state()[-1][1] in ("done", "error", "stopped"))
        return state()

    def send_with_enter(text_parts):
        box = by_id("message")
        box.click()
        for i, part in enumerate(text_parts):
            if i:
                ActionChains(driver).key_down(Keys.SHIFT).send_keys(Keys.ENTER) \
                    .key_up(Keys.SHIFT).perform()
            box.send_keys(part)
        assert box.get_attribute("value") == "\n".join(text_parts), box.get_attribute("value")
        box.send_keys(Keys.ENTER)

    driver.get(url + "/")
    assert driver.title == "qwen chat", driver.title

    # 1. The key: asked for, a wrong one refused with the server's message, the right one kept.
    wait.until(lambda d: by_id("key-form").is_displayed())
    assert "no API key" in by_id("key-reason").text, by_id("key-reason").text
    by_id("api-key").send_keys("sk-wrong")
    by_id("key-save").click()
    wait.until(lambda d: by_id("key-form").is_displayed()
               and "incorrect API key" in by_id("key-reason").text)
    by_id("api-key").send_keys(args.api_key)
    by_id("key-save").click()
    wait.until(lambda d: by_id("model").text != "")
    assert not by_id("key-form").is_displayed()
    assert js("return sessionStorage.getItem('qwen-api-key')") == args.api_key

    # 2. One turn, streamed, against the same request without streaming.
    driver.find_element(By.CSS_SELECTOR, "#settings summary").click()  # opens <details>
    by_id("system").send_keys(SYSTEM)
    for field, value in [("temperature", "0"), ("max-tokens", str(MAX_TOKENS))]:
        by_id(field).clear()
        by_id(field).send_keys(value)
    first = ["Hello!", "Write one line about boards."]
    send_with_enter(first)
    shown = finished()
    assert [s[:2] for s in shown] == [["user", ""], ["assistant", "done"]], shown
    user_text, answer = shown[0][2], shown[1][2]
    assert user_text == "\n".join(first), repr(user_text)
    conversation = [{"role": "user", "content": user_text}]
    want = expected_answer(url, args.api_key, conversation)
    assert answer == want, f"streamed {answer!r} != not streamed {want!r}"
    assert answer != "", "the tiny model answered nothing: the comparison would be empty"
    assert by_id("message").get_attribute("value") == ""
    print(f"turn 1: {len(answer)} characters, equal to the non-streamed answer")

    # 3. A second turn carries the conversation.
    conversation.append({"role": "assistant", "content": answer})
    send_with_enter(["And one more."])
    shown = finished()
    assert [s[1] for s in shown] == ["", "done", "", "done"], shown
    conversation.append({"role": "user", "content": "And one more."})
    want = expected_answer(url, args.api_key, conversation)
    assert shown[3][2] == want, f"streamed {shown[3][2]!r} != not streamed {want!r}"
    print(f"turn 2: {len(want)} characters, equal to the non-streamed answer")

    # 4. A phone-sized window: nothing wider than the screen. Then the screenshot.
    driver.set_window_size(360, 740)
    overflow = js("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"{overflow} px of horizontal overflow at 360 px"
    driver.set_window_size(760, 900)
    js("window.scrollTo(0, 0)")
    driver.save_screenshot(args.screenshot)
    print(f"screenshot: {args.screenshot}")

    # 5. Stop: pressed as soon as the request is sent (in the same script, so before any
    # token can arrive), it aborts the request and gives the message back.
    by_id("message").send_keys("stop me")
    js("document.getElementById('composer').requestSubmit();"
       "document.getElementById('stop').click();")
    wait.until(lambda d: js("return document.body.dataset.busy") == "false"
               and by_id("status").text == "Stopped.")
    assert len(state()) == 4, state()
    assert by_id("message").get_attribute("value") == "stop me"
    by_id("message").clear()
    print("stop aborts the request and gives the message back")

    # 6. An HTTP error is shown with the server's message; New chat empties the page.
    conversation.append({"role": "assistant", "content": want})
    conversation.append({"role": "user", "content": "x"})
    status, err = api(url, args.api_key, {
        "messages": [{"role": "system", "content": SYSTEM}] + conversation,
        "temperature": 0,
        "max_tokens": 10**7,
    })
    assert status == 400 and err["error"]["code"] == "context_length_exceeded", err
    by_id("max-tokens").clear()
    by_id("max-tokens").send_keys(str(10**7))
    send_with_enter(["x"])
    shown = finished()
    assert shown[-1] == ["error", "error", err["error"]["message"]], (shown[-1], err)
    assert len(shown) == 5, shown  # the unsent message was taken back
    assert by_id("message").get_attribute("value") == "x"
    by_id("new-chat").click()
    assert state() == [], state()
    print("error shown with the server's message; new chat empties the page")


if __name__ == "__main__":
    sys.exit(main())
