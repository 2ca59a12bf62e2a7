// Playground: generate, edit (with the mask painter) and vary, streaming partial images.
import { models } from "./app.js";
import { send, stream } from "./api.js";
import { MaskPainter } from "./mask.js";
import { resultCards } from "./results.js";
import { clear, errorBox, field, h, select, statusLine } from "./ui.js";

const OPS = [
  ["generate", "Generate", "/v1/images/generations"],
  ["edit", "Edit", "/v1/images/edits"],
  ["variation", "Vary", "/v1/images/variations"],
];

let controller = null;
let onPaste = null;

export function unmount() {
  if (controller) controller.abort();
  if (onPaste) document.removeEventListener("paste", onPaste);
  onPaste = null;
}

export async function mount(root) {
  const all = await models();
  const ui = build(all);
  root.append(ui.element);
  ui.refresh();
  performance.mark("console:playground"); // the tests measure time to a usable playground
}

function build(all) {
  const s = { op: "generate", input: null, inputUrl: null, painter: null };
  const opGroup = h("fieldset", { class: "ops" }, h("legend", {}, "Operation"));
  for (const [value, label] of OPS) {
    opGroup.append(
      h("label", { class: "chip" },
        h("input", { type: "radio", name: "op", value, checked: value === s.op,
          onchange: () => { s.op = value; refresh(); } }),
        label),
    );
  }
  const [modelField, model] = field("Model", select(all.map((m) => [m.id, m.id]), pickDefault(all)));
  model.name = "model";
  const [promptField, prompt] = field("Prompt", h("textarea", { name: "prompt", rows: 3, placeholder: "A lighthouse at dawn, watercolor" }));
  const [sizeField, size] = field("Size", h("select", { name: "size" }));
  const [customField, custom] = field("Custom size", h("input", { name: "custom-size", placeholder: "768x512", pattern: "\\d+x\\d+" }), "WIDTHxHEIGHT");
  const [nField, n] = field("Images (n)", h("input", { name: "n", type: "number", min: 1, value: 1 }));
  const [qualityField, quality] = field("Quality", h("select", { name: "quality" }));
  const [styleField, style] = field("Style", h("select", { name: "style" }));
  const [formatField, format] = field("Output format", h("select", { name: "output_format" }));
  const [bgField, background] = field("Background", h("select", { name: "background" }));
  const [modField, moderation] = field("Moderation", h("select", { name: "moderation" }));
  const [compField, compression] = field("Compression (%)", h("input", { name: "output_compression", type: "number", min: 0, max: 100, placeholder: "default" }));
  const [providerField, provider] = field("Provider", h("select", { name: "provider" }), "Pin one provider, or let routing choose");
  const [seedField, seed] = field("Seed", h("input", { name: "seed", type: "number", min: 0, placeholder: "random" }));
  const [streamField, streamBox] = field("Stream partial images", h("input", { name: "stream", type: "checkbox" }));
  const [partialsField, partials] = field("Partial images", h("input", { name: "partial_images", type: "number", min: 1, max: 3, value: 2 }));
  streamField.classList.add("inline");

  const fileInput = h("input", { id: "input-file", type: "file", accept: "image/png,image/jpeg,image/webp", class: "visually-hidden" });
  const drop = h("div", { class: "drop", tabindex: 0, role: "button", "aria-describedby": "drop-hint",
    onclick: () => fileInput.click(),
    onkeydown: (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); fileInput.click(); } } },
    h("label", { for: "input-file" }, "Input image"),
    h("span", { id: "drop-hint", class: "muted" }, "Drop, paste or choose a PNG, JPEG or WebP"));
  const maskArea = h("div", { class: "mask-area" });
  const inputSection = h("div", { class: "inputs" }, drop, fileInput, maskArea);

  const submit = h("button", { type: "submit", class: "primary", id: "run" }, "Generate");
  const cancel = h("button", { type: "button", hidden: true, onclick: () => controller && controller.abort() }, "Cancel");
  const status = statusLine();
  const results = h("section", { class: "results", "aria-label": "Results", id: "results" });
  const form = h("form", { class: "card controls", "aria-label": "Playground" },
    h("h1", {}, "Playground"), opGroup, modelField, promptField, inputSection,
    h("div", { class: "grid2" }, sizeField, customField, nField, qualityField, styleField, formatField, compField, bgField, modField, providerField, seedField),
    h("div", { class: "grid2" }, streamField, partialsField),
    h("div", { class: "actions" }, submit, cancel), status);

  const spec = () => all.find((m) => m.id === model.value) || all[0];

  function fill(selectEl, values, keep, withDefault = true) {
    const old = keep ? selectEl.value : "";
    clear(selectEl);
    if (withDefault) selectEl.append(h("option", { value: "" }, "default"));
    for (const v of values) selectEl.append(h("option", { value: v, selected: v === old }, v));
  }

  function refresh() {
    const m = spec();
    const caps = m.capabilities || {};
    for (const radio of opGroup.querySelectorAll("input")) {
      radio.disabled = !m.operations.includes(radio.value);
    }
    if (!m.operations.includes(s.op)) {
      s.op = m.operations[0];
      opGroup.querySelector(`input[value="${s.op}"]`).checked = true;
    }
    submit.textContent = OPS.find((o) => o[0] === s.op)[1];
    const chosen = size.value;
    fill(size, m.sizes || [], true);
    if (m.free_size) size.append(h("option", { value: "custom" }, "custom…"));
    if ([...size.options].some((o) => o.value === chosen)) size.value = chosen;
    customField.hidden = size.value !== "custom";
    n.max = String(m.max_n || 10);
    fill(quality, caps.qualities || [], true);
    qualityField.hidden = !(caps.qualities || []).length;
    fill(style, caps.styles || [], true);
    styleField.hidden = !(caps.styles || []).length;
    fill(format, caps.output_formats || [], true);
    fill(background, caps.backgrounds || [], true);
    fill(moderation, caps.moderations || [], true);
    modField.hidden = !(caps.moderations || []).length;
    compField.hidden = !["jpeg", "webp"].includes(format.value);
    fill(provider, [...new Set((m.endpoints || []).map((e) => e.provider))], true);
    promptField.hidden = s.op === "variation";
    inputSection.hidden = s.op === "generate";
    const canStream = s.op !== "variation";
    streamField.hidden = !canStream;
    partialsField.hidden = !canStream || !streamBox.checked;
    maskArea.hidden = s.op !== "edit";
  }

  size.addEventListener("change", () => (customField.hidden = size.value !== "custom"));
  model.addEventListener("change", refresh);
  streamBox.addEventListener("change", refresh);
  format.addEventListener("change", refresh);

  async function setInput(file) {
    if (!file || !file.type.startsWith("image/")) return;
    if (s.inputUrl) URL.revokeObjectURL(s.inputUrl);
    s.input = file;
    s.inputUrl = URL.createObjectURL(file);
    const img = new Image();
    img.src = s.inputUrl;
    await img.decode();
    s.painter = new MaskPainter(img);
    clear(maskArea).append(
      h("p", { class: "muted" }, `${file.name || "image"} — ${img.naturalWidth}×${img.naturalHeight}. Paint the area to change (edit).`),
      s.painter.element,
    );
    drop.querySelector(".muted").textContent = `${file.name || "pasted image"} selected — drop or paste to replace`;
    maskArea.hidden = s.op !== "edit";
  }
  fileInput.addEventListener("change", () => setInput(fileInput.files[0]));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); setInput(e.dataTransfer.files[0]); });
  onPaste = (e) => {  // anywhere on the page: an image on the clipboard becomes the input
    const item = [...(e.clipboardData?.items || [])].find((i) => i.type.startsWith("image/"));
    if (item) setInput(item.getAsFile());
  };
  document.addEventListener("paste", onPaste);

  async function useImage(src) {
    const blob = src.startsWith("data:") ? dataUrlBlob(src) : await (await fetch(src)).blob();
    const file = new File([blob], "result.png", { type: blob.type || "image/png" });
    s.op = "edit";
    opGroup.querySelector('input[value="edit"]').checked = true;
    refresh();
    await setInput(file);
    prompt.focus();
  }

  function params() {
    const p = { model: model.value };
    if (s.op !== "variation") p.prompt = prompt.value;
    const chosen = size.value === "custom" ? custom.value.trim() : size.value;
    if (chosen) p.size = chosen;
    if (Number(n.value) > 1) p.n = Number(n.value);
    for (const [key, el] of [["quality", quality], ["style", style], ["output_format", format], ["background", background], ["moderation", moderation]]) {
      if (el.value && !el.closest(".field").hidden) p[key] = el.value;
    }
    if (seed.value !== "") p.seed = Number(seed.value);
    if (compression.value !== "" && !compField.hidden) p.output_compression = Number(compression.value);
    p.meta = true;
    if (streamBox.checked && s.op !== "variation") {
      p.stream = true;
      p.partial_images = Number(partials.value);
      delete p.n;
    }
    return p;
  }

  async function body(p) {
    const routing = provider.value ? { only: [provider.value] } : null;
    if (s.op === "generate") return routing ? { ...p, provider: routing } : p;
    if (!s.input) throw new Error("Choose an input image first.");
    const fd = new FormData();
    for (const [k, v] of Object.entries(p)) fd.append(k, String(v));
    if (routing) fd.append("provider", JSON.stringify(routing));
    fd.append("image", s.input, s.input.name || "image.png");
    if (s.op === "edit" && s.painter && s.painter.painted) {
      fd.append("mask", await s.painter.toBlob(), "mask.png");
    }
    return fd;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (controller) return;
    const p = params();
    const path = OPS.find((o) => o[0] === s.op)[2];
    const started = performance.now();
    controller = new AbortController();
    submit.disabled = true;
    cancel.hidden = false;
    status.textContent = "Working…";
    clear(results);
    const extra = { prompt: p.prompt, format: p.output_format, onUse: useImage };
    try {
      const payload = await body(p);
      if (p.stream) {
        await runStream(path, payload, results, extra, status);
      } else {
        const reply = await send("POST", path, payload);
        results.append(...resultCards(reply, extra));
      }
      status.textContent = `Done in ${Math.round(performance.now() - started)} ms.`;
    } catch (error) {
      status.textContent = "";
      results.append(errorBox(error.name === "AbortError" ? new Error("Cancelled.") : error));
    } finally {
      controller = null;
      submit.disabled = false;
      cancel.hidden = true;
    }
  });

  return { element: h("div", { class: "playground" }, form, results), refresh };
}

async function runStream(path, payload, results, extra, status) {
  const strip = h("div", { class: "partials", "aria-label": "Partial images" });
  const live = h("div", { class: "stream" }, h("h2", {}, "Streaming"), strip);
  results.append(live);
  let done = false;
  const fallback = await stream(path, payload, (type, data) => {
    if (type.endsWith(".partial_image")) {
      const index = data.partial_image_index;
      strip.append(h("img", { class: "partial", src: `data:image/${data.output_format || "png"};base64,${data.b64_json}`, alt: `Partial image ${index + 1}` }));
      status.textContent = `Partial image ${index + 1} received…`;
    } else if (type.endsWith(".completed")) {
      done = true;
      const reply = { data: [{ b64_json: data.b64_json }], size: data.size, output_format: data.output_format, meta: data.meta };
      results.append(...resultCards(reply, extra));
    } else if (type === "error") {
      throw Object.assign(new Error(data.error?.message || "stream failed"), data.error || {});
    }
  }, controller.signal);
  if (fallback) results.append(...resultCards(fallback, extra));
  else if (!done) throw new Error("The stream ended before the image was complete.");
}

/** A data: URL as a Blob, without fetch (the CSP's connect-src allows this origin only). */
function dataUrlBlob(src) {
  const [head, b64] = src.split(",", 2);
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  return new Blob([bytes], { type: head.slice(5).split(";")[0] });
}

function pickDefault(all) {
  const ok = all.find((m) => m.id === "imagegate/sandbox") || all.find((m) => m.available) || all[0];
  return ok ? ok.id : "";
}
