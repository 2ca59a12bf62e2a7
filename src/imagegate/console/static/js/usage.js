// Usage: cost and images per day, by model and by provider, error rate; SVG bar charts
// drawn here (no chart library: a few bars need none).
import { get } from "./api.js";
import { clear, errorBox, field, h, statusLine, usd } from "./ui.js";

const SVG = "http://www.w3.org/2000/svg";

function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

function iso(date) {
  return date.toISOString().slice(0, 10);
}

/** A bar chart: rows [{label, value}], value formatted by fmt. */
export function barChart(title, rows, fmt = String) {
  const width = 440;
  const barH = 22;
  const labelW = 150;
  const height = Math.max(1, rows.length) * (barH + 6) + 8;
  const max = Math.max(0, ...rows.map((r) => r.value)) || 1;
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img", "aria-label": title });
  svg.append(s("title", {}, title));
  rows.forEach((r, i) => {
    const y = 4 + i * (barH + 6);
    const w = Math.max(r.value > 0 ? 2 : 0, ((width - labelW - 70) * r.value) / max);
    svg.append(
      s("text", { x: labelW - 8, y: y + barH * 0.7, "text-anchor": "end", class: "label" }, r.label.length > 20 ? `${r.label.slice(0, 19)}…` : r.label),
      s("rect", { x: labelW, y, width: w, height: barH, rx: 3, class: "bar" }),
      s("text", { x: labelW + w + 6, y: y + barH * 0.7, class: "value" }, fmt(r.value)),
    );
  });
  if (!rows.length) svg.append(s("text", { x: 8, y: 20, class: "label" }, "no data in this range"));
  return h("figure", { class: "chart-box" }, h("figcaption", {}, title), svg);
}

export async function mount(root) {
  const today = new Date();
  const monthAgo = new Date(today.getTime() - 29 * 86400000);
  const [fromField, from] = field("From", h("input", { type: "date", name: "start", value: iso(monthAgo) }));
  const [toField, to] = field("To", h("input", { type: "date", name: "end", value: iso(today) }));
  const status = statusLine();
  const totals = h("div", { class: "totals" });
  const charts = h("div", { class: "charts" });
  const form = h("form", { class: "card controls range", "aria-label": "Date range" },
    h("h1", {}, "Usage"), h("div", { class: "grid2" }, fromField, toField),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Show")), status);
  root.append(h("div", { class: "usage" }, form, totals, charts));

  async function load() {
    const start = from.value;
    const endDay = new Date(`${to.value}T00:00:00Z`);
    const end = iso(new Date(endDay.getTime() + 86400000)); // the end day included
    status.textContent = "Loading…";
    try {
      const q = (group_by) => get("/v1/usage", { start, end, group_by });
      const [day, model, provider] = await Promise.all([q("day"), q("model"), q("provider")]);
      const t = day.totals;
      const errors = t.requests ? (100 * (t.requests - t.succeeded)) / t.requests : 0;
      clear(totals).append(
        ...[["Requests", t.requests], ["Images", t.images], ["Cost", usd(t.cost_usd)], ["Error rate", `${errors.toFixed(1)}%`]]
          .map(([k, v]) => h("div", { class: "stat" }, h("span", { class: "muted" }, k), h("strong", {}, v))));
      const rate = (r) => (r.requests ? (100 * (r.requests - r.succeeded)) / r.requests : 0);
      const rows = (data, key) => data.map((r) => ({ label: r.group ?? "(none)", value: key(r) }));
      clear(charts).append(
        barChart("Cost per day (USD)", rows(day.data, (r) => r.cost_usd), usd),
        barChart("Images per day", rows(day.data, (r) => r.images)),
        barChart("Error rate per day (%)", rows(day.data, rate), (v) => `${v.toFixed(1)}%`),
        barChart("Cost by model (USD)", rows(model.data, (r) => r.cost_usd), usd),
        barChart("Images by model", rows(model.data, (r) => r.images)),
        barChart("Images by provider", rows(provider.data, (r) => r.images)),
        barChart("Cost by provider (USD)", rows(provider.data, (r) => r.cost_usd), usd),
      );
      status.textContent = "";
    } catch (error) {
      status.textContent = "";
      clear(charts).append(errorBox(error));
    }
  }
  form.addEventListener("submit", (e) => { e.preventDefault(); load(); });
  await load();
}

export function unmount() {}
