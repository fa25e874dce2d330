// X-Ray's only script: refresh tables in place, run actions with the CSRF token, stream job logs.
"use strict";

const csrf = () => document.querySelector('meta[name="csrf-token"]')?.content || "";

function flash(message, kind) {
  const box = document.getElementById("flash");
  box.textContent = message;
  box.className = kind;
  box.hidden = false;
}

// Elements with data-refresh are re-rendered from their HTML fragment every data-every ms.
async function refresh(el) {
  const query = el.hasAttribute("data-with-query") ? location.search : "";
  try {
    const response = await fetch(el.dataset.refresh + query, { headers: { Accept: "text/html" } });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new Error(body.detail || response.statusText);
    }
    el.innerHTML = await response.text();
    const stamp = document.getElementById("updated");
    if (stamp) stamp.textContent = "updated " + new Date().toISOString().slice(11, 19) + " UTC";
    el.removeAttribute("data-stale");
  } catch (error) {
    el.setAttribute("data-stale", "");
    flash("refresh failed: " + error.message, "error");
  }
}

function startRefreshing() {
  for (const el of document.querySelectorAll("[data-refresh]")) {
    setInterval(() => refresh(el), Number(el.dataset.every) || 3000);
  }
}

// Filters apply at once: the URL keeps them (shareable), the table refreshes without a reload.
function wireFilters() {
  const form = document.getElementById("filters");
  if (!form) return;
  const apply = (event) => {
    event?.preventDefault();
    const params = new URLSearchParams();
    for (const [key, value] of new FormData(form)) if (value) params.set(key, value);
    history.replaceState(null, "", params.toString() ? "?" + params : location.pathname);
    for (const el of document.querySelectorAll("[data-with-query]")) refresh(el);
  };
  form.addEventListener("submit", apply);
  form.addEventListener("change", apply);
}

// Action forms post with fetch and the CSRF header; without JavaScript they post the hidden field.
function wireActions() {
  document.addEventListener("submit", async (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.dataset.action) return;
    event.preventDefault();
    if (form.dataset.action === "delete" && !confirm(`Delete cluster ${form.dataset.name}? Its jobs stop.`)) return;
    const button = form.querySelector("button");
    button.disabled = true;
    flash(form.dataset.action === "delete" ? "deleting…" : "starting JupyterLab…", "info");
    try {
      const response = await fetch(form.action, {
        method: "POST",
        headers: { "X-CSRF-Token": csrf(), Accept: "application/json" },
      });
      const body = await response.json().catch(() => ({}));
      if (!response.ok) throw new Error(body.detail || response.statusText);
      if (form.dataset.action === "notebook") {
        const box = document.getElementById("flash");
        box.className = "ok";
        box.hidden = false;
        box.replaceChildren("Notebook ready: ");
        const link = Object.assign(document.createElement("a"), { href: body.url, target: "_blank", id: "notebook-url" });
        link.textContent = "open JupyterLab";
        box.append(link);
      } else {
        flash(`deleted ${body.deleted}`, "ok");
        if (form.dataset.then) location.assign(form.dataset.then);
      }
      for (const el of document.querySelectorAll("[data-refresh]")) refresh(el);
    } catch (error) {
      flash(error.message, "error");
    } finally {
      button.disabled = false;
    }
  });
}

// Job logs: one EventSource; each message is a line. The stream restarts from the top on reconnect.
function streamLogs() {
  const log = document.getElementById("log");
  if (!log) return;
  const state = document.getElementById("stream-state");
  const follow = document.getElementById("follow");
  const badge = document.getElementById("job-status");
  const showStatus = (status) => {
    badge.textContent = status;
    badge.className = "job-" + status.toLowerCase();
  };
  const poll = setInterval(async () => {
    const response = await fetch(badge.dataset.src).catch(() => null);
    if (response?.ok) showStatus((await response.json()).status);
  }, Number(badge.dataset.every) || 3000);
  const source = new EventSource(log.dataset.stream);
  source.onopen = () => {
    log.textContent = "";
    state.textContent = "streaming";
  };
  source.onmessage = (event) => {
    log.append(event.data + "\n");
    if (follow.checked) log.scrollTop = log.scrollHeight;
  };
  source.addEventListener("problem", (event) => flash(event.data, "error"));
  source.addEventListener("end", (event) => {
    source.close();
    clearInterval(poll);
    const status = JSON.parse(event.data).status;
    showStatus(status);
    state.textContent = "job ended: " + status;
  });
  source.onerror = () => {
    if (source.readyState !== EventSource.CLOSED) state.textContent = "reconnecting…";
  };
}

document.addEventListener("DOMContentLoaded", () => {
  startRefreshing();
  wireFilters();
  wireActions();
  streamLogs();
});
