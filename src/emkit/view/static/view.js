// emkit view: the only script. It refreshes the counts of runs still in progress.
// It writes numbers and status words it fetched as JSON, always with textContent: no model
// text ever reaches the page through it, and nothing is parsed as HTML.
"use strict";

function refresh(box) {
  fetch(box.dataset.countsUrl, { headers: { "Accept": "application/json" } })
    .then((r) => (r.ok ? r.json() : null))
    .then((counts) => {
      if (!counts) return;
      for (const el of box.querySelectorAll("[data-live]")) {
        const value = counts[el.dataset.live];
        if (value === undefined) continue;
        el.textContent = String(value);
        if (el.dataset.live === "status") el.className = "status status-" + String(value).replace(/[^a-z]/g, "");
      }
      if (counts.status !== "started") box.dataset.done = "1";
    })
    .catch(() => {});
}

function poll() {
  for (const box of document.querySelectorAll("[data-counts-url]")) {
    if (box.dataset.done !== "1") refresh(box);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  if (document.querySelector("[data-counts-url]")) {
    poll();
    window.setInterval(poll, 3000);
  }
});
