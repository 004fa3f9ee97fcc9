// The player page (recorder/pages.py renders it): asciinema-player on one recording.
// A live recording plays through the player's eventsource driver from
// api/v1/recordings/ID/events (recorder/sse.py) and follows new output until the session
// ends; any other (or a live one opened at ?t=) plays from its cast file, seekable, with
// markers for the cast's "m" events, its exit ("x") and search hits.
"use strict";
(function () {
  const view = document.getElementById("view");
  const el = document.getElementById("player");
  if (!view || !el) return;
  const cfg = JSON.parse(view.dataset.config);
  const speed = document.getElementById("speed");
  const note = document.getElementById("live-note");
  const list = document.getElementById("markers");
  const state = { player: null, mode: null, playing: false, markers: [], cast: null };
  window.tsshPlayer = state; // for tests and the curious: the current player and its mode

  function clock(t) {
    const s = Math.max(0, Math.floor(t));
    const mm = String(Math.floor(s / 60) % 60).padStart(2, "0");
    const ss = String(s % 60).padStart(2, "0");
    return (s >= 3600 ? Math.floor(s / 3600) + ":" : "") + mm + ":" + ss;
  }

  function showError(message) {
    note.textContent = "";
    el.innerHTML = "";
    const p = document.createElement("p");
    p.className = "error";
    p.textContent = message;
    el.appendChild(p);
  }

  function castMarkers(text) {
    const out = [];
    const lines = text.split("\n");
    for (let i = 1; i < lines.length; i++) {
      const line = lines[i];
      if (line[0] !== "[" || (!line.includes('"m"') && !line.includes('"x"'))) continue;
      let e;
      try { e = JSON.parse(line); } catch (_) { continue; }
      if (!Array.isArray(e) || typeof e[0] !== "number") continue;
      if (e[1] === "m") out.push([e[0], String(e[2])]);
      else if (e[1] === "x") out.push([e[0], "exit status " + e[2]]);
    }
    return out;
  }

  // Tailscale's Kubernetes operator writes resize events as "HEIGHTxWIDTH" (the asciicast
  // format says "COLSxROWS"); the page says so in cfg.resizeSwapped (recorder/kubernetes.py)
  function unswapResizes(text) {
    return text.split("\n").map((line, i) => {
      if (i === 0 || line[0] !== "[" || !line.includes('"r"')) return line;
      let e;
      try { e = JSON.parse(line); } catch (_) { return line; }
      if (!Array.isArray(e) || e[1] !== "r" || typeof e[2] !== "string") return line;
      const m = /^(\d+)x(\d+)$/.exec(e[2]);
      return m ? JSON.stringify([e[0], "r", m[2] + "x" + m[1]]) : line;
    }).join("\n");
  }

  function showMarkers() {
    list.innerHTML = "";
    for (const [t, label] of state.markers) {
      const li = document.createElement("li");
      const b = document.createElement("button");
      b.type = "button";
      b.dataset.t = String(t);
      b.textContent = clock(t) + "  " + label;
      b.addEventListener("click", () => state.player && state.player.seek(t + AFTER));
      li.appendChild(b);
      list.appendChild(li);
    }
  }

  function track(player) {
    player.addEventListener("playing", () => { state.playing = true; });
    player.addEventListener("pause", () => { state.playing = false; });
    player.addEventListener("ended", () => { state.playing = false; });
  }

  // A time on this page (?t=, a marker, a search hit) means the screen once that moment's
  // events are shown: a hit's time is the event that completed its line, and the player at
  // exactly an event's time shows the screen before it (tests/recorder/test_ui.py)
  const AFTER = 0.001;

  function createRecording(startAt, autoPlay) {
    if (state.player) state.player.dispose();
    el.innerHTML = "";
    state.mode = "recording";
    state.player = AsciinemaPlayer.create({ data: state.cast }, el, {
      startAt: startAt ? startAt + AFTER : 0, autoPlay: autoPlay, preload: true,
      markers: state.markers,
      speed: Number(speed.value), fit: "width",
      // paused at a time (?t=, a speed change): show that moment's screen, not a blank one
      poster: !autoPlay && startAt ? "npt:" + (startAt + AFTER) : undefined,
    });
    track(state.player);
  }

  async function loadRecording(startAt, autoPlay) {
    let r;
    try {
      r = await fetch(cfg.cast, { cache: "no-store", credentials: "same-origin" });
    } catch (e) {
      return showError("cannot fetch the recording: " + e);
    }
    if (!r.ok) return showError("cannot fetch the recording: " + r.status + " " + r.statusText);
    let text = await r.text();
    if (!text.endsWith("\n")) text = text.slice(0, text.lastIndexOf("\n") + 1); // torn line
    if (cfg.resizeSwapped) text = unswapResizes(text);
    state.cast = text;
    state.markers = castMarkers(text).concat(cfg.hits).sort((a, b) => a[0] - b[0]);
    showMarkers();
    speed.disabled = false;
    createRecording(startAt, autoPlay);
  }

  async function ended() {
    // The live stream ended: say how, then show the whole recording, paused at its end
    // (seekable, with its markers) instead of the player's "stream ended" overlay.
    state.playing = false;
    let meta = null;
    try {
      meta = await (await fetch(cfg.meta, { cache: "no-store" })).json();
    } catch (e) {
      note.textContent = "The session ended.";
      return;
    }
    const exit = meta.exitStatus === null ? "no exit status" : "exit status " + meta.exitStatus;
    note.textContent = "The session ended (" + meta.status + ", " + exit + ").";
    const badge = document.querySelector("#status .status");
    if (badge) { badge.textContent = meta.status; badge.className = "status " + meta.status; }
    document.getElementById("exit-status").textContent =
      meta.exitStatus === null ? "-" : String(meta.exitStatus);
    if (typeof meta.duration === "number") {
      document.getElementById("duration").textContent = meta.duration.toFixed(1) + "s";
    }
    await loadRecording(meta.duration || 0, false);
  }

  function createLive() {
    state.mode = "live";
    speed.disabled = true; // a live stream plays at the speed it happens
    note.textContent = "Live: following the session as it happens.";
    state.player = AsciinemaPlayer.create({ driver: "eventsource", url: cfg.events }, el, {
      autoPlay: true, fit: "width",
    });
    track(state.player);
    state.player.addEventListener("ended", ended);
  }

  speed.addEventListener("change", async () => {
    if (state.mode !== "recording") return;
    const at = await Promise.resolve(state.player.getCurrentTime());
    createRecording(at, state.playing);
  });

  if (cfg.status === "live" && cfg.t === null) createLive();
  else loadRecording(cfg.t, false);
})();
