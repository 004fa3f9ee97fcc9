// The recordings list: the first page follows new and live recordings by reloading its rows
// (server-rendered, recorder/pages.py) every few seconds while the tab is visible.
"use strict";
(function () {
  const body = document.getElementById("rows");
  const url = body && body.dataset.refresh;
  if (!url) return;
  const open = () => Array.from(body.querySelectorAll("details[open]"))
    .map((d) => d.closest("tr").dataset.connection);
  async function refresh() {
    if (document.visibilityState !== "visible") return;
    try {
      const r = await fetch(url, { cache: "no-store", credentials: "same-origin" });
      if (!r.ok) return;
      const html = await r.text();
      if (html === body.innerHTML) return;
      const keep = open();
      body.innerHTML = html;
      for (const tr of body.querySelectorAll("tr.group")) {
        if (keep.includes(tr.dataset.connection)) tr.querySelector("details").open = true;
      }
    } catch (e) {
      // the recorder restarts or the network blips: try again at the next tick
    }
  }
  setInterval(refresh, 2000);
})();
