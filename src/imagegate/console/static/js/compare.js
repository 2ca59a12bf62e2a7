// Compare: one prompt through several models, or one model pinned to several providers.
import { models } from "./app.js";
import { send } from "./api.js";
import { resultCards } from "./results.js";
import { clear, errorBox, field, h, select, statusLine } from "./ui.js";

export async function mount(root) {
  const all = (await models()).filter((m) => m.operations.includes("generate"));
  const [promptField, prompt] = field("Prompt", h("textarea", { name: "prompt", rows: 2, placeholder: "A red bicycle in the snow" }));
  const [sizeField, size] = field("Size", h("input", { name: "size", placeholder: "each model's default" }), "WIDTHxHEIGHT, or empty");
  const modeModels = h("input", { type: "radio", name: "mode", value: "models", checked: true });
  const modeProviders = h("input", { type: "radio", name: "mode", value: "providers" });
  const modes = h("fieldset", { class: "ops" }, h("legend", {}, "Compare"),
    h("label", { class: "chip" }, modeModels, "Several models"),
    h("label", { class: "chip" }, modeProviders, "One model, several providers"));
  const modelBoxes = h("fieldset", { class: "checks" }, h("legend", {}, "Models"),
    ...all.map((m) => h("label", { class: "chip" }, h("input", { type: "checkbox", name: "models", value: m.id, checked: m.available && m.id.startsWith("imagegate/") }), m.id)));
  const [pinField, pinModel] = field("Model", select(all.map((m) => m.id)));
  const providerBoxes = h("fieldset", { class: "checks" }, h("legend", {}, "Providers"));
  const pinned = h("div", { hidden: true }, pinField, providerBoxes);
  const status = statusLine();
  const grid = h("section", { class: "compare-grid", "aria-label": "Comparison results" });
  const run = h("button", { type: "submit", class: "primary" }, "Compare");

  function fillProviders() {
    const spec = all.find((m) => m.id === pinModel.value);
    clear(providerBoxes).append(h("legend", {}, "Providers"));
    for (const e of spec ? spec.endpoints : []) {
      providerBoxes.append(h("label", { class: "chip" }, h("input", { type: "checkbox", name: "providers", value: e.provider, checked: e.available }), `${e.provider}${e.available ? "" : " (unavailable)"}`));
    }
  }
  const switchMode = () => {
    pinned.hidden = !modeProviders.checked;
    modelBoxes.hidden = modeProviders.checked;
  };
  modeModels.addEventListener("change", switchMode);
  modeProviders.addEventListener("change", switchMode);
  pinModel.addEventListener("change", fillProviders);
  fillProviders();

  const form = h("form", { class: "card controls", "aria-label": "Compare" },
    h("h1", {}, "Compare"), promptField, sizeField, modes, modelBoxes, pinned, h("div", { class: "actions" }, run), status);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const jobs = modeProviders.checked
      ? [...providerBoxes.querySelectorAll("input:checked")].map((b) => ({ label: `${pinModel.value} @ ${b.value}`, model: pinModel.value, provider: { only: [b.value] } }))
      : [...modelBoxes.querySelectorAll("input:checked")].map((b) => ({ label: b.value, model: b.value }));
    if (!jobs.length) {
      status.textContent = "Pick at least one.";
      return;
    }
    run.disabled = true;
    status.textContent = `Running ${jobs.length}…`;
    clear(grid);
    await Promise.all(jobs.map((job) => runOne(job, prompt.value, size.value.trim(), grid)));
    status.textContent = `Finished ${jobs.length}.`;
    run.disabled = false;
  });
  root.append(h("div", { class: "compare" }, form, grid));
}

async function runOne(job, prompt, size, grid) {
  const cell = h("article", { class: "cell", "aria-busy": "true" }, h("h2", {}, job.label), h("p", { class: "muted" }, "Working…"));
  grid.append(cell);
  const body = { model: job.model, prompt, meta: true };
  if (size) body.size = size;
  if (job.provider) body.provider = job.provider;
  const started = performance.now();
  try {
    const reply = await send("POST", "/v1/images/generations", body);
    cell.replaceChildren(h("h2", {}, job.label), ...resultCards(reply, { prompt }));
  } catch (error) {
    cell.classList.add("failed");
    cell.replaceChildren(h("h2", {}, job.label), errorBox(error),
      h("p", { class: "muted" }, `after ${Math.round(performance.now() - started)} ms`));
  }
  cell.removeAttribute("aria-busy");
}
