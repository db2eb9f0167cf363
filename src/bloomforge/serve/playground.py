"""The playground page at `/`: prompt, sampling settings, and the continuation streamed as it is
decoded, each piece coloured by its tokens' probability (hover: every token and its p). Plain
HTML and a little JavaScript (no build step); kept in a
module so it ships with the package without package data."""

PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>bloomforge playground</title>
<style>
body{font-family:system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem}
textarea{width:100%;height:7rem;font:inherit}
label{margin-right:1rem}input[type=number]{width:5rem}
#out{white-space:pre-wrap;border:1px solid #ccc;padding:.75rem;min-height:5rem;margin-top:1rem}
#out span{border-radius:2px}#err{color:#b00}
</style></head><body>
<h1>bloomforge playground</h1>
<textarea id="prompt">Le chat</textarea>
<div>
<label>max tokens <input id="max_tokens" type="number" value="32" min="1"></label>
<label>temperature <input id="temperature" type="number" value="0.8" step="0.1" min="0"></label>
<label>top p <input id="top_p" type="number" value="0.95" step="0.05" min="0.01" max="1"></label>
<label>top k <input id="top_k" type="number" value="0" min="0"></label>
<label>seed <input id="seed" type="number" placeholder="none"></label>
<button id="go">Generate</button>
</div>
<div id="out"></div><div id="err"></div><div id="status"></div>
<script>
const $ = (id) => document.getElementById(id);
// red: unlikely, green: likely
function colour(p) { return `hsl(${Math.round(120 * p)}, 70%, 85%)`; }
$("go").onclick = async () => {
  const out = $("out");
  out.textContent = ""; $("err").textContent = ""; $("status").textContent = "";
  const body = {prompt: $("prompt").value, max_tokens: +$("max_tokens").value,
    temperature: +$("temperature").value, top_p: +$("top_p").value, top_k: +$("top_k").value,
    stream: true, logprobs: 0};
  if ($("seed").value !== "") body.seed = +$("seed").value;
  const r = await fetch("/v1/completions", {method: "POST",
    headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
  if (!r.ok) { $("err").textContent = (await r.json()).error.message; return; }
  const reader = r.body.getReader(), dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buf += dec.decode(value, {stream: true});
    let at;
    while ((at = buf.indexOf("\n\n")) >= 0) {
      const line = buf.slice(0, at).replace(/^data: /, ""); buf = buf.slice(at + 2);
      if (line === "[DONE]") { $("status").textContent = "done"; continue; }
      const msg = JSON.parse(line);
      if (msg.error) { $("err").textContent = msg.error.message; continue; }
      const c = msg.choices[0], lp = c.logprobs;
      if (!lp || !lp.tokens.length) {  // the echo or a last piece without new tokens
        if (c.text) out.appendChild(document.createTextNode(c.text));
        continue;
      }
      // one piece of text per chunk: its tokens' joint probability colours it
      const s = document.createElement("span"), ps = lp.token_logprobs.map(Math.exp);
      s.textContent = c.text; s.className = "tok";
      s.dataset.p = ps.reduce((a, b) => a * b, 1).toFixed(4);
      s.title = lp.tokens.map((t, i) => `${JSON.stringify(t)}: p = ${ps[i].toFixed(3)}`).join("\n");
      s.style.background = colour(+s.dataset.p);
      out.appendChild(s);
    }
  }
};
</script></body></html>
"""
