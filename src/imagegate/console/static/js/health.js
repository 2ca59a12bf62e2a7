// Health (admin): providers (credentials, status, engine queue) and endpoints (breaker
// state, EWMA latency and success) from /healthz.
import { h, ms } from "./ui.js";

export async function mount(root) {
  const response = await fetch("/healthz");
  const body = await response.json();
  const providers = Object.entries(body.providers || {});
  const endpoints = Object.entries(body.endpoints || {});
  const extra = (stats) => Object.entries(stats)
    .filter(([k]) => !["available", "status"].includes(k))
    .map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`).join(", ") || "—";
  root.append(
    h("section", { class: "card" },
      h("h1", {}, "Health"),
      h("p", {}, "Gateway: ", h("strong", {}, body.status)),
      h("h2", {}, "Providers"),
      h("div", { class: "scroll" }, h("table", { class: "providers" },
        h("thead", {}, h("tr", {}, ...["Provider", "Credentials", "Status", "Engine / queue"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, ...providers.map(([id, p]) => h("tr", { dataset: { provider: id } },
          h("td", {}, id),
          h("td", { class: p.available ? "ok" : "bad" }, p.available ? "present" : "missing"),
          h("td", {}, p.status), h("td", {}, extra(p))))))),
      h("h2", {}, "Endpoints"),
      endpoints.length ? h("div", { class: "scroll" }, h("table", { class: "endpoints" },
        h("thead", {}, h("tr", {}, ...["Endpoint", "Breaker", "Success (EWMA)", "Latency (EWMA)"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, ...endpoints.map(([id, e]) => h("tr", { dataset: { endpoint: id } },
          h("td", {}, id), h("td", { class: `breaker ${e.state}` }, e.state),
          h("td", {}, e.success_ewma === null ? "—" : `${(100 * e.success_ewma).toFixed(1)}%`),
          h("td", {}, ms(e.latency_ewma_ms)))))))
        : h("p", { class: "muted" }, "No endpoint has served a request yet."),
    ),
  );
}

export function unmount() {}
