"""The playground page of `bloomforge serve`, used as a person would: in headless Chromium
(tests/browser.py) against the real command on a free local port. The prompt is typed, the
sampling settings set, Generate clicked; the continuation streams in as pieces, each showing its
tokens' probabilities, and the text equals `generate_text`'s (greedy). A bad setting shows the
server's error naming the field."""

from __future__ import annotations

import pytest

from browser import chromium_page
from serve_process import serve_process
from test_serve_batching import checkpoint


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    ckpt = checkpoint(tmp_path_factory.mktemp("playground") / "ck")
    with serve_process(ckpt) as url:
        yield ckpt, url


def test_playground_streams_tokens_with_their_probabilities(served):
    from bloomforge.checkpoint import load_checkpoint
    from bloomforge.model.generate import Sampling, generate_text

    ckpt, url = served
    loaded = load_checkpoint(ckpt)
    prompt = "Der Hund läuft"
    [expected] = generate_text(
        loaded.model.eval(), loaded.tokenizer(), [prompt], Sampling(max_new_tokens=20)
    )
    with chromium_page() as page:
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))  # the page's script must run
        page.goto(url + "/")
        page.fill("#prompt", prompt)
        page.fill("#max_tokens", "20")
        page.fill("#temperature", "0")
        page.fill("#top_p", "1")
        page.fill("#top_k", "0")
        # count the pieces as they arrive, before the stream ends
        page.evaluate(
            """() => { window.seen = [];
            new MutationObserver(() => window.seen.push(
                [document.querySelectorAll('#out span.tok').length,
                 document.getElementById('status').textContent])
            ).observe(document.getElementById('out'), {childList: true}); }"""
        )
        page.click("#go")
        page.wait_for_function("document.getElementById('status').textContent === 'done'")
        spans = page.query_selector_all("#out span.tok")
        assert page.inner_text("#err") == "" and errors == []
        assert page.text_content("#out") == expected
        assert len(spans) > 1  # streamed: several pieces
        for s in spans:
            p = float(s.get_attribute("data-p"))
            assert 0 < p <= 1
            assert "p = " in s.get_attribute("title")
            assert s.evaluate("e => getComputedStyle(e).backgroundColor") != "rgba(0, 0, 0, 0)"
        seen = page.evaluate("window.seen")
        assert any(n >= 1 and status != "done" for n, status in seen)  # shown before the end
        # a setting the server refuses: its message names the field
        page.fill("#top_p", "0")
        page.click("#go")
        page.wait_for_function("document.getElementById('err').textContent !== ''")
        assert "top_p" in page.inner_text("#err")
