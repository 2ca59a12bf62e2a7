// Keys (admin): create (the secret is shown once), list, revoke, top up, limits.
import { models, session } from "./app.js";
import { get, send } from "./api.js";
import { clear, errorBox, field, h, statusLine, usd, when } from "./ui.js";

export async function mount(root) {
  const all = await models();
  const [nameField, name] = field("Name", h("input", { name: "name", required: true, autocomplete: "off" }));
  const [creditsField, credits] = field("Credits (USD)", h("input", { name: "credits", type: "number", min: 0, step: "0.01" }), "empty = no limit");
  const [rpmField, rpm] = field("Requests per minute", h("input", { name: "rpm", type: "number", min: 1 }), "empty = no limit");
  const [ipmField, ipm] = field("Images per minute", h("input", { name: "ipm", type: "number", min: 1 }));
  const [concField, conc] = field("Max concurrent", h("input", { name: "max_concurrent", type: "number", min: 1 }));
  const [modelsField, modelList] = field("Models", h("input", { name: "models", list: "model-ids", placeholder: "all" }), "comma-separated; empty = every model");
  const [adminField, adminBox] = field("Admin key", h("input", { name: "admin", type: "checkbox" }));
  adminField.classList.add("inline");
  const datalist = h("datalist", { id: "model-ids" }, ...all.map((m) => h("option", { value: m.id })));
  const secret = h("div", { class: "secret", hidden: true, role: "status" });
  const status = statusLine();
  const form = h("form", { class: "card controls", "aria-label": "Create a key" },
    h("h1", {}, "Keys"), h("h2", {}, "Create a key"),
    h("div", { class: "grid2" }, nameField, creditsField, rpmField, ipmField, concField, modelsField, adminField),
    datalist, h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Create key")), secret, status);
  const tbody = h("tbody");
  const table = h("section", { class: "card" }, h("h2", {}, "All keys"), h("div", { class: "scroll" },
    h("table", { class: "keys" },
      h("thead", {}, h("tr", {}, ...["Name", "Id", "Admin", "Credit balance", "Limits", "Models", "Created", "State", "Top up", ""].map((c) => h("th", { scope: "col" }, c)))),
      tbody)));
  root.append(h("div", { class: "keys-page" }, form, table));

  async function load() {
    const list = await get("/v1/admin/keys");
    clear(tbody).append(...list.data.map((k) => keyRow(k, load, status)));
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { name: name.value.trim() };
    if (credits.value !== "") body.credits = Number(credits.value);
    for (const [k, el] of [["rpm", rpm], ["ipm", ipm], ["max_concurrent", conc]]) if (el.value !== "") body[k] = Number(el.value);
    const ids = modelList.value.split(",").map((s) => s.trim()).filter(Boolean);
    if (ids.length) body.models = ids;
    if (adminBox.checked) body.admin = true;
    try {
      const created = await send("POST", "/v1/admin/keys", body);
      showSecret(secret, created);
      form.reset();
      await load();
    } catch (error) {
      status.replaceChildren(errorBox(error));
    }
  });
  await load();
}

function showSecret(box, created) {
  const code = h("code", { id: "new-key-secret" }, created.key);
  const copy = h("button", { type: "button", onclick: async () => {
    try {
      await navigator.clipboard.writeText(created.key);
      copy.textContent = "Copied";
    } catch {
      getSelection().selectAllChildren(code);
      copy.textContent = "Selected: press Ctrl+C";
    }
  } }, "Copy");
  const dismiss = h("button", { type: "button", onclick: () => { clear(box); box.hidden = true; } }, "I have saved it");
  clear(box).append(
    h("p", {}, h("strong", {}, `Key “${created.name}” created. `), "This secret is shown once; store it now."),
    h("div", { class: "secret-row" }, code, copy, dismiss));
  box.hidden = false;
}

function keyRow(k, reload, status) {
  const limits = [k.rpm && `${k.rpm} rpm`, k.ipm && `${k.ipm} ipm`, k.max_concurrent && `${k.max_concurrent} conc.`].filter(Boolean).join(", ") || "none";
  const amount = h("input", { type: "number", min: "0.01", step: "0.01", "aria-label": `Top-up amount for ${k.name} (USD)`, class: "amount" });
  const topUp = h("button", { type: "button", disabled: !!k.revoked_at, onclick: async () => {
    if (!(Number(amount.value) > 0)) return;
    try {
      const r = await send("POST", `/v1/admin/keys/${k.id}/credits`, { amount: Number(amount.value), note: "console top-up" });
      status.textContent = `${k.name}: added ${usd(r.amount_usd)}, balance ${usd(r.balance_usd)}.`;
      await reload();
    } catch (error) {
      status.replaceChildren(errorBox(error));
    }
  } }, "Add");
  let armed = false;
  const revoke = h("button", { type: "button", class: "danger", hidden: !!k.revoked_at || k.id === session().key_id, "aria-label": `Revoke ${k.name}`, onclick: async () => {
    if (!armed) {
      armed = true;
      revoke.textContent = "Confirm revoke";
      return;
    }
    try {
      await send("DELETE", `/v1/admin/keys/${k.id}`);
      status.textContent = `Revoked ${k.name}.`;
      await reload();
    } catch (error) {
      status.replaceChildren(errorBox(error));
    }
  } }, "Revoke");
  return h("tr", { dataset: { key: k.id }, class: k.revoked_at ? "revoked" : "" },
    h("td", {}, k.name), h("td", {}, h("code", {}, k.id)), h("td", {}, k.admin ? "yes" : "no"),
    h("td", {}, k.credits_usd === null ? "no limit" : usd(k.credits_usd)), h("td", {}, limits),
    h("td", {}, k.models ? k.models.join(", ") : "all"), h("td", {}, when(k.created_at)),
    h("td", { class: "state" }, k.revoked_at ? `revoked ${when(k.revoked_at)}` : "active"),
    h("td", { class: "topup" }, amount, topUp), h("td", {}, revoke));
}
