// Result cards shared by the playground and compare: image, size, provider, attempts,
// latency, cost, download; and a small per-tab cache of thumbnails for the history page.
import { h, ms, usd } from "./ui.js";

const THUMBS = "imagegate.thumbs";

export function imageSrc(item, format = "png") {
  if (item.b64_json) return `data:image/${format === "jpeg" ? "jpeg" : format};base64,${item.b64_json}`;
  return item.url;
}

/** One card per image of an ImagesResponse (with meta). */
export function resultCards(body, extra = {}) {
  const meta = body.meta || {};
  const format = body.output_format || extra.format || "png";
  return (body.data || []).map((item, index) => {
    const src = imageSrc(item, format);
    const img = h("img", { class: "result-image", src, alt: `Result ${index + 1}: ${extra.prompt || ""}` });
    const size = h("span", { class: "size" }, body.size || "");
    img.addEventListener("load", () => {
      size.textContent = `${img.naturalWidth}×${img.naturalHeight}`;
      if (meta.generation_id && index === 0) remember(meta.generation_id, img, extra.prompt);
    });
    const name = `imagegate-${meta.generation_id || "image"}-${index + 1}.${format === "jpeg" ? "jpg" : format}`;
    return h(
      "figure",
      { class: "result", dataset: { generation: meta.generation_id || "" } },
      img,
      h(
        "figcaption",
        {},
        metaList(meta, size),
        item.revised_prompt ? h("p", { class: "muted" }, `Revised prompt: ${item.revised_prompt}`) : null,
        h(
          "div",
          { class: "actions" },
          h("a", { class: "button", href: src, download: name }, "Download"),
          extra.onUse ? h("button", { type: "button", onclick: () => extra.onUse(src) }, "Edit this image") : null,
        ),
      ),
    );
  });
}

export function metaList(meta, size) {
  const attempts = meta.attempts || [];
  const failed = attempts.filter((a) => a.status !== "ok" && a.status !== 200);
  return h(
    "dl",
    { class: "meta" },
    h("dt", {}, "Size"), h("dd", {}, size || "—"),
    h("dt", {}, "Model"), h("dd", {}, meta.model || "—"),
    h("dt", {}, "Provider"), h("dd", { class: "provider" }, meta.provider || "—"),
    h("dt", {}, "Attempts"),
    h("dd", { class: "attempts", title: attempts.map((a) => `${a.provider}: ${a.status}${a.error ? ` (${a.error})` : ""}`).join("\n") },
      `${attempts.length}${failed.length ? ` (${failed.length} failed over)` : ""}`),
    h("dt", {}, "Latency"), h("dd", { class: "latency" }, ms(meta.latency_ms)),
    h("dt", {}, "Cost"), h("dd", { class: "cost" }, usd(meta.cost_usd)),
  );
}

/** Keep a 96-px thumbnail and the prompt of a generation made in this tab. */
function remember(id, img, prompt) {
  try {
    const canvas = document.createElement("canvas");
    const scale = 96 / Math.max(img.naturalWidth, img.naturalHeight);
    canvas.width = Math.max(1, Math.round(img.naturalWidth * scale));
    canvas.height = Math.max(1, Math.round(img.naturalHeight * scale));
    canvas.getContext("2d").drawImage(img, 0, 0, canvas.width, canvas.height);
    const all = JSON.parse(sessionStorage.getItem(THUMBS) || "{}");
    all[id] = { src: canvas.toDataURL("image/jpeg", 0.7), prompt: prompt || "" };
    const ids = Object.keys(all);
    for (const old of ids.slice(0, Math.max(0, ids.length - 60))) delete all[old];
    sessionStorage.setItem(THUMBS, JSON.stringify(all));
  } catch {
    /* a full session storage only loses thumbnails */
  }
}

export function thumbnail(id) {
  try {
    return JSON.parse(sessionStorage.getItem(THUMBS) || "{}")[id] || null;
  } catch {
    return null;
  }
}
