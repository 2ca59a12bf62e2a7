// History: the key's generations (GET /v1/generations, newest first), with a detail view.
import { session } from "./app.js";
import { get } from "./api.js";
import { thumbnail } from "./results.js";
import { errorBox, h, ms, usd, when, statusLine } from "./ui.js";

export async function mount(root, hash) {
  const id = hash.split("/")[2];
  if (id) return detail(root, decodeURIComponent(id));
  const admin = session().admin;
  const rows = h("tbody");
  const more = h("button", { type: "button", hidden: true }, "Load more");
  const status = statusLine();
  const table = h("table", { class: "history" },
    h("caption", { class: "visually-hidden" }, "Recent generations"),
    h("thead", {}, h("tr", {}, ...["", "Time", "Prompt", "Model", "Operation", "Provider", "Status", "Images", "Latency", "Cost", admin ? "Key" : null]
      .filter((c) => c !== null).map((c) => h("th", { scope: "col" }, c)))),
    rows);
  root.append(h("section", { class: "card" }, h("h1", {}, "History"), h("div", { class: "scroll" }, table), more, status));
  let after = null;
  async function page() {
    more.disabled = true;
    try {
      const params = { limit: 25 };
      if (after) params.after = after;
      const list = await get("/v1/generations", params);
      for (const g of list.data) rows.append(row(g, admin));
      after = list.last_id;
      more.hidden = !list.has_more;
      if (!rows.children.length) status.textContent = "No generations yet.";
    } catch (error) {
      root.append(errorBox(error));
    }
    more.disabled = false;
  }
  more.addEventListener("click", page);
  await page();
}

function row(g, admin) {
  const thumb = thumbnail(g.id);
  const link = h("a", { href: `#/history/${encodeURIComponent(g.id)}` }, when(g.created_at));
  return h("tr", { dataset: { generation: g.id }, class: g.status === 200 ? "" : "failed" },
    h("td", {}, thumb ? h("img", { class: "thumb", src: thumb.src, alt: "" }) : ""),
    h("td", {}, link),
    h("td", { class: "prompt" }, thumb ? thumb.prompt : h("span", { class: "muted" }, "—")),
    h("td", {}, g.model),
    h("td", {}, g.operation),
    h("td", {}, g.provider || "—"),
    h("td", {}, g.status === 200 ? "ok" : `${g.status} ${g.error_code || ""}`),
    h("td", {}, g.images),
    h("td", {}, ms(g.latency_ms)),
    h("td", {}, usd(g.cost_usd)),
    admin ? h("td", {}, g.key_id) : null);
}

async function detail(root, id) {
  const card = h("section", { class: "card detail" }, h("p", {}, h("a", { href: "#/history" }, "← History")));
  root.append(card);
  try {
    const g = await get(`/v1/generations/${encodeURIComponent(id)}`);
    const thumb = thumbnail(g.id);
    card.append(...[
      h("h1", {}, `Generation ${g.id}`),
      thumb ? h("img", { class: "thumb large", src: thumb.src, alt: thumb.prompt || "thumbnail" }) : null,
      thumb && thumb.prompt ? h("p", {}, h("strong", {}, "Prompt: "), thumb.prompt) : null,
      h("dl", { class: "meta" },
        ...[["Time", when(g.created_at)], ["Model", g.model], ["Operation", g.operation], ["Provider", g.provider || "—"],
          ["Upstream model", g.upstream_model || "—"], ["Status", g.status], ["Error", g.error_code || "—"],
          ["Images", g.images], ["Latency", ms(g.latency_ms)], ["Cost", usd(g.cost_usd)], ["Key", g.key_id]]
          .flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
      h("h2", {}, "Attempts"),
      h("table", {}, h("thead", {}, h("tr", {}, ...["Provider", "Status", "Latency", "Error"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, ...g.attempts.map((a) => h("tr", {}, h("td", {}, a.provider), h("td", {}, a.status), h("td", {}, ms(a.latency_ms)), h("td", {}, a.error || "—"))))),
    ].filter(Boolean));
  } catch (error) {
    card.append(errorBox(error));
  }
}

export function unmount() {}
