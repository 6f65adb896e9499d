// fusion-nas dashboard: fetches JSON from the server and builds the DOM with textContent only
// (never innerHTML), so search names and failure messages always show as text.
"use strict";

(function () {
  const body = document.body;
  const POLL_MS = Number(body.dataset.pollMs) || 2000;
  const PLOT_CONFIG = { responsive: true, displaylogo: false };

  // ------------------------------------------------------------------ small helpers

  function el(tag, text, attrs) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    return node;
  }

  function byId(id) {
    return document.getElementById(id);
  }

  function setText(id, text) {
    const node = byId(id);
    if (node) node.textContent = text === null || text === undefined ? "–" : String(text);
  }

  function fmtInt(v) {
    return v === null || v === undefined ? "–" : Math.round(v).toLocaleString("en-US");
  }

  function fmtAcc(v) {
    return v === null || v === undefined ? "–" : Number(v).toFixed(4);
  }

  function fmtSec(v) {
    return v === null || v === undefined ? "–" : Number(v).toFixed(1);
  }

  function fmtTime(v) {
    return v ? String(v).replace("T", " ").slice(0, 19) : "–";
  }

  function searchUrl(name) {
    return "/search?" + new URLSearchParams({ name: name }).toString();
  }

  function trialUrl(name, number) {
    return "/trial?" + new URLSearchParams({ search: name, number: String(number) }).toString();
  }

  function badge(node, status) {
    node.textContent = status;
    node.className = "badge status-" + String(status).replace(/[^a-z]/g, "");
  }

  async function getJSON(url) {
    const response = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
    if (!response.ok) throw new Error("HTTP " + response.status);
    return response.json();
  }

  // Poll fn every POLL_MS (skipped while the tab is hidden); fn returns false to stop.
  function poll(fn) {
    const live = byId("live");
    let busy = false;
    let timer = null;
    async function tick() {
      if (busy || document.hidden) return;
      busy = true;
      try {
        const more = await fn();
        live.textContent = "updated " + new Date().toLocaleTimeString();
        live.classList.remove("offline");
        if (more === false && timer !== null) {
          clearInterval(timer);
          timer = null;
        }
      } catch (err) {
        live.textContent = "cannot reach the server (" + err.message + "); retrying";
        live.classList.add("offline");
      } finally {
        busy = false;
      }
    }
    timer = setInterval(tick, POLL_MS);
    tick();
  }

  function react(id, figure) {
    return Plotly.react(id, figure.data, figure.layout, PLOT_CONFIG);
  }

  // ------------------------------------------------------------------ list of searches

  function renderSearches(data) {
    const tbody = document.querySelector("#searches tbody");
    const rows = data.searches.map(function (s) {
      const tr = el("tr");
      tr.dataset.search = s.name;
      const name = el("td");
      name.appendChild(el("a", s.name, { href: searchUrl(s.name), class: "name" }));
      tr.appendChild(name);
      const status = el("td");
      const b = el("span");
      badge(b, s.status);
      status.appendChild(b);
      tr.appendChild(status);
      const progress = el("td", null, { class: "progress" });
      const requested = s.requested || s.done || 1;
      progress.appendChild(el("progress", null, { max: String(requested), value: String(s.done) }));
      progress.appendChild(el("span", " " + s.done + " / " + (s.requested ?? "?")));
      tr.appendChild(progress);
      tr.appendChild(el("td", fmtAcc(s.best_val_acc), { class: "num" }));
      tr.appendChild(el("td", s.front_size, { class: "num" }));
      for (const status of ["failed", "interrupted", "stopped", "infeasible"]) {
        tr.appendChild(el("td", s[status] ?? 0, { class: "num" }));
      }
      tr.appendChild(el("td", s.strategy ?? "–"));
      tr.appendChild(el("td", s.space ?? "–"));
      tr.appendChild(el("td", s.dataset ?? "–"));
      tr.appendChild(el("td", fmtTime(s.created)));
      return tr;
    });
    tbody.replaceChildren(...rows);
    byId("empty").hidden = rows.length > 0;
  }

  function indexPage() {
    poll(async function () {
      renderSearches(await getJSON("/api/searches"));
    });
  }

  // ------------------------------------------------------------------ one search

  const sortState = { key: "number", type: "num", dir: 1 };

  function compare(a, b) {
    let x = a[sortState.key];
    let y = b[sortState.key];
    const missing = (v) => v === null || v === undefined || v === "";
    if (missing(x) && missing(y)) return a.number - b.number;
    if (missing(x)) return 1; // missing values last, whatever the direction
    if (missing(y)) return -1;
    if (sortState.type === "num") {
      x = Number(x);
      y = Number(y);
      if (x !== y) return (x - y) * sortState.dir;
    } else {
      const c = String(x).localeCompare(String(y));
      if (c !== 0) return c * sortState.dir;
    }
    return a.number - b.number;
  }

  // The table shows one page of rows at a time: a search of 10,000 trials stays quick.
  const PAGE_ROWS = 100;
  const pageState = { page: 0 };

  function renderPager(name, trials, pages) {
    const pager = byId("pager");
    if (!pager) return;
    pager.hidden = pages <= 1;
    setText("page-text", "page " + (pageState.page + 1) + " of " + pages);
    byId("page-prev").disabled = pageState.page === 0;
    byId("page-next").disabled = pageState.page >= pages - 1;
  }

  function setupPager(getTrials, name) {
    for (const [id, step] of [["page-prev", -1], ["page-next", 1]]) {
      const button = byId(id);
      if (!button) continue;
      button.addEventListener("click", function () {
        pageState.page += step;
        renderTrials(name, getTrials());
      });
    }
  }

  function renderTrials(name, trials) {
    const tbody = document.querySelector("#trials tbody");
    const pages = Math.max(1, Math.ceil(trials.length / PAGE_ROWS));
    pageState.page = Math.min(Math.max(0, pageState.page), pages - 1);
    const start = pageState.page * PAGE_ROWS;
    const shown = trials.slice().sort(compare).slice(start, start + PAGE_ROWS);
    renderPager(name, trials, pages);
    const rows = shown.map(function (t) {
      const tr = el("tr", null, { class: "clickable" });
      tr.dataset.number = String(t.number);
      if (t.on_front) tr.classList.add("on-front");
      const num = el("td", null, { class: "num" });
      num.appendChild(el("a", "#" + t.number, { href: trialUrl(name, t.number) }));
      tr.appendChild(num);
      tr.appendChild(el("td", t.on_front ? "★" : "", { class: "front-mark" }));
      const status = el("td");
      const b = el("span");
      badge(b, t.status);
      status.appendChild(b);
      tr.appendChild(status);
      tr.appendChild(el("td", fmtAcc(t.val_acc), { class: "num" }));
      tr.appendChild(el("td", fmtInt(t.macs), { class: "num" }));
      tr.appendChild(el("td", fmtInt(t.params), { class: "num" }));
      tr.appendChild(el("td", t.arch_desc ?? "–", { class: "mono" }));
      tr.appendChild(el("td", fmtSec(t.train_seconds), { class: "num" }));
      tr.appendChild(el("td", t.note, { class: "note-cell" }));
      tr.addEventListener("click", function (event) {
        if (event.target.closest("a")) return; // the link navigates by itself
        window.location.href = trialUrl(name, t.number);
      });
      return tr;
    });
    tbody.replaceChildren(...rows);
    setText("trial-count", "(" + trials.length + ")");
  }

  function setupSorting(getTrials, name) {
    for (const th of document.querySelectorAll("#trials th[data-key]")) {
      th.querySelector("button").addEventListener("click", function () {
        const key = th.dataset.key;
        if (sortState.key === key) sortState.dir = -sortState.dir;
        else {
          sortState.key = key;
          sortState.type = th.dataset.type;
          sortState.dir = 1;
        }
        for (const other of document.querySelectorAll("#trials th[data-key]")) {
          other.removeAttribute("aria-sort");
        }
        th.setAttribute("aria-sort", sortState.dir > 0 ? "ascending" : "descending");
        renderTrials(name, getTrials());
      });
    }
  }

  function renderBaselines(baselines) {
    const section = byId("baselines");
    if (!section) return;
    section.hidden = baselines.length === 0;
    const rows = baselines.map(function (b) {
      const tr = el("tr");
      tr.appendChild(el("td", b.label));
      tr.appendChild(el("td", b.description));
      tr.appendChild(el("td", fmtInt(b.macs), { class: "num" }));
      tr.appendChild(el("td", fmtInt(b.params), { class: "num" }));
      tr.appendChild(el("td", fmtAcc(b.val_acc), { class: "num" }));
      tr.appendChild(el("td", fmtAcc(b.test_acc), { class: "num" }));
      return tr;
    });
    section.querySelector("tbody").replaceChildren(...rows);
  }

  function renderSummary(s) {
    badge(byId("status"), s.status);
    const progress = byId("progress");
    progress.max = s.requested || s.done || 1;
    progress.value = s.done;
    setText("progress-text", s.done + " / " + (s.requested ?? "?") +
      (s.running ? " (" + s.running + " running)" : ""));
    setText("best", fmtAcc(s.best_val_acc));
    setText("front-size", s.front_size);
    setText("knee", s.knee === null ? "–" : "#" + s.knee);
    // labelled with its reference point (the list page's numbers share one over all searches)
    setText("hv", s.hypervolume_label ?? Number(s.hypervolume).toFixed(4));
    setText("failed", [s.failed, s.interrupted, s.stopped, s.infeasible]
      .map((n) => n ?? 0).join(" / "));
    setText("space", (s.space ?? "?") + " · " + (s.dataset ?? "?"));
    setText("strategy", (s.strategy ?? "?") + " · " + (s.epochs ?? "?") + " epochs");
  }

  // The page's own query parameter: exactly the name the server found, where an HTML attribute
  // would turn CR into LF and NUL into U+FFFD (and every poll would then ask for another name).
  function pageParam(key) {
    return new URLSearchParams(window.location.search).get(key);
  }

  function searchPage() {
    const name = pageParam("name") ?? body.dataset.search;
    let version = null;
    let trials = [];
    const byNumber = new Map();
    let clickBound = false;
    setupSorting(() => trials, name);
    setupPager(() => trials, name);
    poll(async function () {
      const query = new URLSearchParams({ name: name });
      if (version !== null) {
        // Ask only for what the page lacks: trials above the last one it holds, and the
        // current state of those it shows as running.
        query.set("since", version);
        let last = -1;
        const running = [];
        for (const t of trials) {
          last = Math.max(last, t.number);
          if (t.status === "running") running.push(t.number);
        }
        query.set("after", String(last));
        if (running.length) query.set("running", running.join(","));
      }
      const data = await getJSON("/api/search?" + query.toString());
      if (data.unchanged) return true;
      version = data.version;
      if (!data.partial) byNumber.clear();
      for (const t of data.trials) byNumber.set(t.number, t);
      const front = new Set(data.front || []);
      for (const t of byNumber.values()) t.on_front = front.has(t.number);
      trials = Array.from(byNumber.values());
      const arrived = performance.now();
      renderSummary(data.summary);
      renderTrials(name, trials);
      renderBaselines(data.baselines || []);
      await react("pareto", data.figures.pareto);
      await react("hypervolume", data.figures.hypervolume);
      await react("operators", data.figures.operators);
      if (!clickBound) {
        clickBound = true;
        byId("pareto").on("plotly_click", function (event) {
          const point = event.points && event.points[0];
          if (point && point.customdata) {
            window.location.href = trialUrl(name, point.customdata[0]);
          }
        });
      }
      body.dataset.trials = String(trials.length); // for scripts waiting on an update
      // for scripts timing the page: data in hand, and everything drawn
      body.dataset.arrivedMs = String(arrived);
      body.dataset.drawnMs = String(performance.now());
      return true;
    });
  }

  // ------------------------------------------------------------------ one trial

  function renderTrial(t) {
    badge(byId("status"), t.status);
    byId("front").hidden = !t.on_front;
    setText("val-acc", fmtAcc(t.val_acc));
    setText("macs", fmtInt(t.macs));
    setText("params", fmtInt(t.params));
    setText("train-seconds", fmtSec(t.train_seconds));
    setText("arch-id", t.arch_id ?? "–");
    setText("times", fmtTime(t.datetime_start) + " · " + fmtTime(t.datetime_complete));
    setText("arch-desc", t.arch_desc ?? "–");
    const note = byId("note");
    let text = "";
    if (t.duplicate_of !== null && t.duplicate_of !== undefined) {
      text = "Same network as trial #" + t.duplicate_of + " (its result was reused).";
    } else if (t.fail_reason) {
      text = t.fail_reason;
    }
    note.textContent = text;
    note.hidden = text === "";
    const rows = t.stages.map(function (st, i) {
      const tr = el("tr");
      tr.appendChild(el("td", i));
      tr.appendChild(el("td", st.operator));
      for (const key of ["width", "depth", "kernel", "heads"]) {
        tr.appendChild(el("td", st[key] ?? "–", { class: "num" }));
      }
      tr.appendChild(el("td", st.attention ?? "–"));
      // present only where the space offers a choice (elsewhere the space fixes them)
      tr.appendChild(el("td", st.mlp_ratio ?? "–", { class: "num" }));
      tr.appendChild(el("td", st.downsample ?? "–"));
      return tr;
    });
    document.querySelector("#stages tbody").replaceChildren(...rows);
    return react("curve", t.figure);
  }

  function trialPage() {
    const query = new URLSearchParams({
      search: pageParam("search") ?? body.dataset.search,
      number: body.dataset.number,
    });
    poll(async function () {
      const t = await getJSON("/api/trial?" + query.toString());
      await renderTrial(t);
      return t.status === "running"; // keep polling until the trial ends
    });
  }

  const pages = { index: indexPage, search: searchPage, trial: trialPage };
  const start = pages[body.dataset.page];
  if (start) start();
})();
