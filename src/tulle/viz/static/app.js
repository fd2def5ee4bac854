// The dashboard's entry point: hash routing, the 2-second poll loop, the
// live indicator and the theme toggle. Pages are views with
// `element`, `refresh()` (one poll) and `destroy()`.
//   #/                 overview      (overview.js)
//   #/topology         topology      (topology.js)
//   #/service/NAME     service page  (service.js)

import { OverviewView } from "./overview.js";
import { ServiceView } from "./service.js";
import { TopologyView } from "./topology.js";

const POLL_INTERVAL_MS = 2000;

const root = document.getElementById("view");
const live = document.getElementById("live");
let current = null;
let timer = null;
let generation = 0;

function route() {
  const hash = decodeURIComponent(location.hash.replace(/^#/, "")) || "/";
  const service = hash.match(/^\/service\/(.+)$/);
  if (service) return { tab: null, make: () => new ServiceView(service[1]) };
  if (hash === "/topology") return { tab: "topology", make: () => new TopologyView() };
  return { tab: "overview", make: () => new OverviewView() };
}

function setLive(state, text) {
  live.dataset.state = state;
  live.textContent = text;
}

async function poll(view, token) {
  if (document.hidden) {
    // A background tab does not poll; it catches up when shown again.
    timer = setTimeout(() => poll(view, token), POLL_INTERVAL_MS);
    return;
  }
  try {
    await view.refresh();
    if (token !== generation) return;
    setLive("live", `live · ${new Date().toLocaleTimeString([], { hour12: false })}`);
  } catch (error) {
    if (token !== generation || error.name === "AbortError") return;
    setLive("error", error.message || "control plane unreachable");
    view.showError?.(error);
  }
  if (token !== generation) return;
  // Wait for the poll to finish before scheduling the next: a slow control
  // plane never has two polls of one page in flight.
  timer = setTimeout(() => poll(view, token), POLL_INTERVAL_MS);
}

function navigate() {
  generation += 1;
  clearTimeout(timer);
  current?.destroy?.();
  const { tab, make } = route();
  for (const link of document.querySelectorAll(".tabs a")) {
    if (link.dataset.tab === tab) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  current = make();
  root.replaceChildren(current.element);
  window.scrollTo(0, 0);
  poll(current, generation);
}

function setupTheme() {
  const stored = localStorage.getItem("tulle-theme");
  if (stored) document.documentElement.dataset.theme = stored;
  document.getElementById("theme").addEventListener("click", () => {
    const dark = document.documentElement.dataset.theme
      ? document.documentElement.dataset.theme === "dark"
      : matchMedia("(prefers-color-scheme: dark)").matches;
    const next = dark ? "light" : "dark";
    document.documentElement.dataset.theme = next;
    localStorage.setItem("tulle-theme", next);
  });
}

setupTheme();
window.addEventListener("hashchange", navigate);
navigate();
