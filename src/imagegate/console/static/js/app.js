// Console shell: sign-in, the page router (URL fragment), and admin-only navigation.
import { getKey, setKey, get } from "./api.js";
import { clear, errorBox } from "./ui.js";

const PAGES = {
  playground: () => import("./playground.js"),
  compare: () => import("./compare.js"),
  history: () => import("./history.js"),
  usage: () => import("./usage.js"),
  keys: () => import("./keys.js"),
  health: () => import("./health.js"),
};
const ADMIN_PAGES = new Set(["keys", "health"]);

const state = { session: null, models: null };
let current = null; // the mounted page module

export function session() {
  return state.session;
}

/** The models this key may use, from GET /v1/models (fetched once per sign-in). */
export async function models() {
  if (!state.models) state.models = get("/v1/models").then((body) => body.data);
  return state.models;
}

function $(id) {
  return document.getElementById(id);
}

async function signIn(key) {
  setKey(key);
  state.models = null;
  const page = (location.hash.replace(/^#\/?/, "").split("/")[0] || "playground");
  if (page === "playground") PAGES.playground(); // fetch the module while the key is checked
  try {
    state.session = await get("/console/api/session");
  } catch (error) {
    setKey(null);
    state.session = null;
    throw error;
  }
  $("who-name").textContent = `${state.session.name}${state.session.admin ? " (admin)" : ""}`;
  for (const link of document.querySelectorAll("#nav [data-admin]")) {
    link.hidden = !state.session.admin;
  }
  $("nav").hidden = false;
  $("who").hidden = false;
  $("signin").hidden = true;
  $("page").hidden = false;
}

function signOut() {
  if (current && current.unmount) current.unmount();
  current = null;
  setKey(null);
  state.session = null;
  state.models = null;
  $("nav").hidden = true;
  $("who").hidden = true;
  $("page").hidden = true;
  clear($("page"));
  $("signin").hidden = false;
  $("signin-key").value = "";
  $("signin-key").focus();
}

async function route() {
  if (!state.session) return;
  let name = location.hash.replace(/^#\/?/, "").split("/")[0] || "playground";
  if (!PAGES[name] || (ADMIN_PAGES.has(name) && !state.session.admin)) name = "playground";
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.page === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (current && current.unmount) current.unmount();
  const page = clear($("page"));
  page.dataset.page = name;
  try {
    const module = await PAGES[name]();
    current = module;
    await module.mount(page, location.hash);
  } catch (error) {
    page.append(errorBox(error));
  }
}

function start() {
  $("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const err = $("signin-error");
    err.hidden = true;
    try {
      await signIn($("signin-key").value.trim());
      $("signin-key").value = "";
      await route();
    } catch (error) {
      err.textContent = error.status === 401 ? "That key was not accepted." : error.message;
      err.hidden = false;
    }
  });
  $("sign-out").addEventListener("click", signOut);
  window.addEventListener("hashchange", route);
  const key = getKey();
  if (key) {
    // A key already accepted in this tab: ask for the models alongside the session check.
    signIn(key).then(route, () => signOut());
    models().catch(() => (state.models = null));
  }
}

start();
