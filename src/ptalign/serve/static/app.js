// The ptalign page: search a loaded catalog (POST /v1/rank) and chat through the guard (POST /v1/generate).
"use strict";

const $ = (id) => document.getElementById(id);

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;  // textContent: product text is never parsed as HTML
  return node;
}

async function postJSON(path, body) {
  const response = await fetch(path, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({ detail: response.statusText }));
  if (!response.ok) throw new Error(`${response.status}: ${typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail)}`);
  return data;
}

async function loadHealth() {
  try {
    const health = await (await fetch("/health")).json();
    const select = $("catalog");
    for (const [name, size] of Object.entries(health.catalogs)) {
      const option = el("option", "", `${name} (${size})`);
      option.value = name;
      select.appendChild(option);
    }
    $("status").textContent = `model: ${health.model ?? "none"} · ranker: ${health.ranker} · judge: ${health.judge ?? "none"}`;
    if (!health.model) $("chat-form").querySelector("button").disabled = true;
  } catch (err) {
    $("status").textContent = `server unreachable: ${err.message}`;
  }
}

function renderResults(data) {
  const list = $("results");
  list.replaceChildren();
  const utilities = data.results.map((r) => r.utility);
  const lo = Math.min(...utilities), hi = Math.max(...utilities);
  for (const r of data.results) {
    const share = hi > lo ? 0.1 + 0.9 * (r.utility - lo) / (hi - lo) : 1;  // min-max over this result list
    const card = el("li", "card");
    card.dataset.productId = r.product.product_id;
    card.append(el("div", "rank", String(r.rank)), el("div", "title", r.product.title));
    card.append(el("div", "meta", [r.product.brand, r.product.color].filter(Boolean).join(" · ")));
    card.append(el("div", "desc", r.description));
    const utility = el("div", "utility");
    const bar = el("div", "bar"), fill = el("div", "fill");
    fill.style.width = `${(100 * share).toFixed(1)}%`;
    bar.append(fill);
    utility.append(el("span", "", "utility"), bar, el("span", "value", r.utility.toFixed(3)));
    card.append(utility);
    list.append(card);
  }
  $("search-info").textContent = data.note
    ?? `${data.results.length} results · ${data.ranker} · ${data.took_ms.toFixed(0)} ms`;
}

$("search-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const button = event.submitter ?? $("search-form").querySelector("button");
  button.disabled = true;
  $("search-info").textContent = "ranking…";
  try {
    renderResults(await postJSON("/v1/rank", { query: $("query").value, catalog: $("catalog").value || null }));
  } catch (err) {
    $("results").replaceChildren();
    $("search-info").replaceChildren(el("span", "error", err.message));
  } finally {
    button.disabled = false;
  }
});

$("chat-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const message = $("message").value.trim();
  if (!message) return;
  const button = $("chat-form").querySelector("button");
  const log = $("chat-log");
  log.append(el("div", "msg user", message));
  $("message").value = "";
  button.disabled = true;
  try {
    const data = await postJSON("/v1/generate", { message });
    const reply = el("div", "msg bot", data.answer || "(empty answer)");
    const v = data.verdict;
    const label = data.withheld ? "withheld: judged harmful" : v.harmful ? "judged harmful" : v.refusal ? "refusal" : "judged safe";
    reply.append(el("br"), el("span", `verdict ${v.harmful ? "harmful" : "safe"}`, `${label} (${v.judge}, ${v.score.toFixed(2)})`));
    log.append(reply);
  } catch (err) {
    log.append(el("div", "msg bot error", err.message));
  } finally {
    button.disabled = false;
    log.scrollTop = log.scrollHeight;
  }
});

loadHealth();
