/* usage_server dashboard: asks the public API with the key kept in sessionStorage.
 *
 * Every number shown comes from GET /v1/model-usage (and the configuration endpoints)
 * as the API answers it; the page only formats, sorts and draws. Polling sends the last
 * ETag in If-None-Match, so an unchanged answer costs a 304 and no rendering.
 */
(function () {
  "use strict";

  const KEY_STORE = "usage_server.key";
  const PREFS_STORE = "usage_server.prefs";
  const POLL_MS = 60000;
  const RECENT_LIMIT = 25;
  const SERIES_PAGE = 500; // rows of the time-series table at once: 10,000 rows would take seconds to lay out
  // Browsers report some zones by ICU's legacy ids; the picker offers IANA's current names.
  const CURRENT_ZONE_NAMES = {
    "America/Buenos_Aires": "America/Argentina/Buenos_Aires", "America/Godthab": "America/Nuuk",
    "Asia/Calcutta": "Asia/Kolkata", "Asia/Katmandu": "Asia/Kathmandu", "Asia/Rangoon": "Asia/Yangon",
    "Asia/Saigon": "Asia/Ho_Chi_Minh", "Atlantic/Faeroe": "Atlantic/Faroe", "Europe/Kiev": "Europe/Kyiv",
    "Pacific/Enderbury": "Pacific/Kanton", "Pacific/Ponape": "Pacific/Pohnpei", "Pacific/Truk": "Pacific/Chuuk",
  };
  const $ = (id) => document.getElementById(id);

  const state = {
    key: null,
    report: null,
    query: null,
    etag: null,
    seq: 0,
    controller: null,
    chart: null,
    sort: { key: "totalCost", dir: "desc" },
    seriesPage: 0,
    configs: [],
    recent: null,
  };

  // --- formatting ----------------------------------------------------------------------

  const integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
  const usd2 = new Intl.NumberFormat(undefined, { style: "currency", currency: "USD", minimumFractionDigits: 2, maximumFractionDigits: 2 });
  const usd6 = new Intl.NumberFormat(undefined, { style: "currency", currency: "USD", minimumFractionDigits: 6, maximumFractionDigits: 6 });
  // Averages at one precision, three significant digits and never fewer than cents ($0.0400
  // beside $0.00703, $12.35), so that different averages never read alike.
  const average = new Intl.NumberFormat(undefined, {
    style: "currency", currency: "USD", minimumFractionDigits: 2, maximumFractionDigits: 2,
    minimumSignificantDigits: 3, maximumSignificantDigits: 3, roundingPriority: "morePrecision",
  });
  const compact = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });
  const compactUsd = new Intl.NumberFormat(undefined, { style: "currency", currency: "USD", notation: "compact", maximumFractionDigits: 2 });
  const instantFormats = new Map();

  /** Cents for amounts of a cent or more; all six decimals below, so small costs never read $0.00. */
  function money(value) {
    return (value === 0 || Math.abs(value) >= 0.01 ? usd2 : usd6).format(value);
  }

  function instantText(iso, zone) {
    if (!iso) return "never";
    if (!instantFormats.has(zone)) {
      instantFormats.set(zone, new Intl.DateTimeFormat("en-US", {
        timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit",
        hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
      }));
    }
    const parts = {};
    for (const part of instantFormats.get(zone).formatToParts(new Date(iso))) parts[part.type] = part.value;
    return `${parts.year}-${parts.month}-${parts.day} ${parts.hour}:${parts.minute}:${parts.second}`;
  }

  function zoneOffset(zone) {
    try {
      const part = new Intl.DateTimeFormat("en-US", { timeZone: zone, timeZoneName: "longOffset" })
        .formatToParts(new Date()).find((p) => p.type === "timeZoneName");
      return part ? part.value.replace("GMT", "UTC") : "";
    } catch (_) {
      return "";
    }
  }

  function shortLabel(label, granularity, sameYear) {
    if (label === undefined) return "";
    if (granularity === "hour") return `${label.slice(5, 10)} ${label.slice(11, 16)}`;
    if (granularity === "month") return label.slice(0, 7);
    return sameYear ? label.slice(5) : label;
  }

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    Object.assign(node, props || {});
    for (const child of children) node.append(child);
    return node;
  }

  /** A cost cell, with a warning badge beside the amount when some of it was counted at $0 for want of a price. */
  function costCell(value, unpricedText, title = "") {
    const cell = el("td", { className: "num", textContent: money(value), title });
    if (unpricedText) {
      cell.append(" ", el("span", { className: "badge warn", textContent: unpricedText, title: "no price known: counted at $0" }));
    }
    return cell;
  }

  // --- talking to the API --------------------------------------------------------------

  class ApiFailure extends Error {
    constructor(status, body) {
      super(`HTTP ${status}`);
      this.status = status;
      this.body = body;
    }
  }

  async function call(path, { accept = "application/json", etag = null, signal } = {}) {
    const headers = { Authorization: `Bearer ${state.key}`, Accept: accept };
    if (etag) headers["If-None-Match"] = etag;
    let response;
    try {
      response = await fetch(path, { headers, signal, cache: "no-store", credentials: "omit" });
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new ApiFailure(0, null);
    }
    if (response.ok || response.status === 304) return response;
    let body = null;
    try {
      body = await response.json();
    } catch (_) { /* not JSON: a proxy's page */ }
    throw new ApiFailure(response.status, body);
  }

  function explain(failure) {
    const said = failure.body && failure.body.error;
    if (failure.status === 401) {
      return ["error", "This key was not accepted (401 Unauthorized). Check that you pasted the whole key and that it has not been revoked."];
    }
    if (failure.status === 403) {
      return ["error", "This key cannot read usage (403 Forbidden). Use a key with the read scope."];
    }
    if (failure.status === 0) {
      return ["error", "The server could not be reached. Check the connection and try again."];
    }
    if (failure.status >= 500) {
      return ["error", `The server could not answer (HTTP ${failure.status}${said ? `: ${said}` : ""}). Try again in a moment.`];
    }
    if (said) {
      const detail = (failure.body.details || [])[0];
      return ["warn", `${said}${detail && detail.suggestion ? ` (${detail.suggestion})` : ""}.`];
    }
    return ["error", `The server answered HTTP ${failure.status}.`];
  }

  function showMessage(kind, text) {
    const box = $("message");
    box.className = `message ${kind}`;
    box.textContent = text;
    box.hidden = false;
  }

  function clearMessage() {
    $("message").hidden = true;
    $("message").textContent = "";
  }

  function fail(err) {
    if (err.name === "AbortError") return;
    if (!(err instanceof ApiFailure)) throw err;
    const [kind, text] = explain(err);
    if (err.status === 401 || err.status === 403) forgetKey();
    showMessage(kind, text);
    document.body.dataset.state = "error";
  }

  // --- what to ask ---------------------------------------------------------------------

  function zone() {
    return $("zone").value;
  }

  function usagePath() {
    const params = new URLSearchParams();
    if ($("period").value === "custom") {
      if ($("start-date").value) params.set("startDate", $("start-date").value);
      if ($("end-date").value) params.set("endDate", $("end-date").value);
    } else {
      params.set("period", $("period").value);
    }
    params.set("granularity", $("granularity").value);
    params.set("timezone", zone());
    if ($("config-filter").value) params.set("modelConfigId", $("config-filter").value);
    return `/v1/model-usage?${params}`;
  }

  function savePrefs() {
    const prefs = {};
    for (const id of ["period", "start-date", "end-date", "granularity", "zone", "config-filter"]) prefs[id] = $(id).value;
    sessionStorage.setItem(PREFS_STORE, JSON.stringify(prefs));
  }

  function restorePrefs() {
    const reported = Intl.DateTimeFormat().resolvedOptions().timeZone;
    const zones = Array.from($("zone").options, (option) => option.value);
    const browserZone = [CURRENT_ZONE_NAMES[reported], reported].find((name) => zones.includes(name));
    $("zone").value = browserZone || "UTC";
    $("period").value = "last_30_days";
    $("granularity").value = "day";
    let prefs = {};
    try {
      prefs = JSON.parse(sessionStorage.getItem(PREFS_STORE) || "{}");
    } catch (_) { /* ignore a damaged entry */ }
    for (const [id, value] of Object.entries(prefs)) {
      const input = $(id);
      if (!input || input.tagName !== "SELECT") {
        if (input) input.value = value;
      } else if (Array.from(input.options).some((option) => option.value === value)) {
        input.value = value;
      } else if (id === "config-filter" && value) {
        input.append(el("option", { value, textContent: value }));
        input.value = value;
      }
    }
    $("custom-range").hidden = $("period").value !== "custom";
  }

  // --- loading -------------------------------------------------------------------------

  function setBusy(busy) {
    $("main").setAttribute("aria-busy", String(busy));
    if (busy) document.body.dataset.state = "loading";
  }

  function clockTime() {
    return new Date().toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

  /** Ask for the usage; `conditional` re-asks the same query with its ETag (polling, Refresh). */
  async function loadUsage({ conditional = false } = {}) {
    const path = usagePath();
    const etag = conditional && path === state.query ? state.etag : null;
    const seq = ++state.seq;
    if (state.controller) state.controller.abort();
    const controller = new AbortController();
    state.controller = controller;
    setBusy(true);
    try {
      const response = await call(path, { etag, signal: controller.signal });
      if (response.status === 304) {
        $("status-note").textContent = `unchanged · checked ${clockTime()}`;
        document.body.dataset.state = "ready";
        document.body.dataset.notModified = String(Number(document.body.dataset.notModified || 0) + 1);
        return;
      }
      const report = await response.json();
      if (seq !== state.seq) return;
      state.report = report;
      state.seriesPage = 0;
      state.query = path;
      state.etag = response.headers.get("ETag");
      render();
      $("status-note").textContent = `updated ${clockTime()}`;
      $("main").dataset.loaded = path;
      document.body.dataset.state = "ready";
    } catch (err) {
      if (seq === state.seq) fail(err);
    } finally {
      if (seq === state.seq) setBusy(false);
    }
  }

  async function loadConfigs() {
    try {
      const [listed, used] = await Promise.all([
        call("/v1/model-configs").then((r) => r.json()),
        call("/v1/model-configs/usage").then((r) => r.json()),
      ]);
      const byId = new Map(listed.data.map((config) => [config.id, config]));
      state.configs = used.data.map((item) => ({ ...item, displayName: (byId.get(item.id) || {}).displayName || item.id }));
      renderConfigs();
      fillConfigFilter();
    } catch (err) {
      fail(err);
    }
  }

  async function loadRecent(configId) {
    try {
      const response = await call(`/v1/model-usage/${encodeURIComponent(configId)}?limit=${RECENT_LIMIT}`);
      state.recent = await response.json();
      renderRecent();
      renderConfigs();
      $("recent").scrollIntoView({ block: "start", behavior: "smooth" });
    } catch (err) {
      fail(err);
    }
  }

  async function downloadCsv() {
    const button = $("download-csv");
    button.disabled = true;
    try {
      const response = await call(usagePath(), { accept: "text/csv" });
      const blob = await response.blob();
      const named = /filename="([^"]+)"/.exec(response.headers.get("Content-Disposition") || "");
      const url = URL.createObjectURL(blob);
      const link = el("a", { href: url, download: named ? named[1] : "model-usage.csv" });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (err) {
      fail(err);
    } finally {
      button.disabled = false;
    }
  }

  // --- rendering -----------------------------------------------------------------------

  function render() {
    const { meta, summary, usageByModel, timeSeries } = state.report;
    $("main").dataset.renders = String(Number($("main").dataset.renders || 0) + 1);
    renderContext(meta, timeSeries.length);
    renderCards(summary, meta.unpricedRequests || 0);
    renderChart(timeSeries, meta.granularity, summary);
    renderModels();
    if ($("series-details").open) renderSeriesTable();
    const empty = summary.totalRequests === 0;
    $("chart-empty").hidden = !empty;
    $("models-empty").hidden = Object.keys(usageByModel).length > 0;
    if (empty) {
      showMessage("info", `No usage from ${meta.startDate} to ${meta.endDate} (${meta.timezone || zone()}). Try a longer period or another configuration.`);
    } else {
      clearMessage();
    }
  }

  function renderContext(meta, buckets) {
    const shownZone = meta.timezone || zone();
    $("zone-name").textContent = shownZone;
    $("zone-offset").textContent = zoneOffset(shownZone) ? `(now ${zoneOffset(shownZone)})` : "";
    $("range-note").textContent = `${meta.startDate} – ${meta.endDate} · ${integer.format(buckets)} ${meta.granularity} bucket${buckets === 1 ? "" : "s"}`;
    $("chart-note").textContent = `by ${meta.granularity}, ${shownZone}`;
    if ($("period").value === "custom") {
      $("start-date").value = meta.startDate;
      $("end-date").value = meta.endDate;
    }
  }

  function setAmount(id, value, format) {
    const node = $(id);
    node.textContent = format(value);
    node.dataset.value = String(value);
    if (format === money) node.title = `${usd6.format(value)} exactly`;
  }

  function renderCards(summary, unpriced) {
    setAmount("total-cost", summary.totalCost, money);
    setAmount("total-tokens", summary.totalTokens, integer.format);
    setAmount("platform-cost", summary.platformCost, money);
    setAmount("platform-tokens", summary.platformTokens, integer.format);
    setAmount("user-cost", summary.userCost, money);
    setAmount("user-tokens", summary.userTokens, integer.format);
    setAmount("total-requests", summary.totalRequests, integer.format);
    setAmount("unpriced-requests", unpriced, integer.format);
    setAmount("cache-hit-rate", hitRate(summary), percent);
    setAmount("cached-tokens", summary.cachedPromptTokens, integer.format);
    setAmount("prompt-tokens", summary.promptTokens, integer.format);
    $("avg-cost").textContent = summary.totalRequests ? average.format(summary.totalCost / summary.totalRequests) : "–";
    $("split-platform").style.width = summary.totalCost > 0 ? `${(100 * summary.platformCost) / summary.totalCost}%` : "0";
    $("card-unpriced").classList.toggle("flagged", unpriced > 0);
    $("unpriced-note").textContent = unpriced > 0
      ? "no catalogue price: counted at $0"
      : "every request had a price";
  }

  function chartSize() {
    const width = Math.max($("chart").clientWidth, 280);
    return { width, height: width < 560 ? 220 : 300 };
  }

  /** The chart; its legend reads the hovered bucket, and the range's totals when none is. */
  function renderChart(series, granularity, summary) {
    const box = $("chart");
    if (state.chart) state.chart.destroy();
    state.chart = null;
    box.dataset.points = String(series.length);
    if (typeof uPlot === "undefined") {
      box.textContent = "The chart library did not load.";
      return;
    }
    const labels = series.map((point) => point.date);
    const sameYear = labels.length > 0 && labels[0].slice(0, 4) === labels[labels.length - 1].slice(0, 4);
    const xs = series.map((_, index) => index);
    const bars = series.length <= 120;
    const dense = series.length > 600;
    const options = {
      ...chartSize(),
      scales: {
        x: { time: false, range: (u, min, max) => [min - 0.5, max + 0.5] },
        cost: { range: (u, min, max) => [0, max > 0 ? max * 1.08 : 1] },
        requests: { range: (u, min, max) => [0, max > 0 ? max * 1.08 : 1] },
      },
      series: [
        { label: "Bucket", value: (u, x, s, i) => (i == null ? "whole range" : labels[Math.round(x)] || "–") },
        {
          label: "Cost", scale: "cost", stroke: "#2563eb", width: bars ? 0 : 1.5,
          fill: bars ? "rgba(37, 99, 235, 0.55)" : "rgba(37, 99, 235, 0.18)",
          paths: bars ? uPlot.paths.bars({ size: [0.72, 80] }) : undefined,
          points: { show: false },
          value: (u, v, s, i) => money(i == null ? summary.totalCost : v),
        },
        {
          label: "Requests", scale: "requests", width: dense ? 1 : 2,
          stroke: dense ? "rgba(234, 88, 12, 0.55)" : "#ea580c",
          points: { show: series.length <= 60 },
          value: (u, v, s, i) => integer.format(i == null ? summary.totalRequests : v),
        },
      ],
      axes: [
        {
          space: granularity === "hour" ? 96 : 72,
          incrs: [1, 2, 3, 4, 6, 7, 12, 14, 24, 28, 48, 72, 96, 168, 336, 720, 1440, 2880, 5000],
          values: (u, splits) => splits.map((i) => shortLabel(labels[i], granularity, sameYear)),
        },
        { scale: "cost", size: 64, values: (u, values) => values.map((v) => compactUsd.format(v)) },
        { scale: "requests", side: 1, size: 56, grid: { show: false }, values: (u, values) => values.map((v) => compact.format(v)) },
      ],
      legend: { live: true },
      cursor: { drag: { x: true, y: false } },
    };
    box.textContent = "";
    state.chart = new uPlot(options, [xs, series.map((p) => p.cost), series.map((p) => p.requests)], box);
  }

  function renderSeriesTable() {
    const series = state.report.timeSeries;
    const pages = Math.max(1, Math.ceil(series.length / SERIES_PAGE));
    state.seriesPage = Math.min(state.seriesPage, pages - 1);
    const first = state.seriesPage * SERIES_PAGE;
    const shown = series.slice(first, first + SERIES_PAGE);
    $("series-pager").hidden = pages === 1;
    $("series-rows").textContent = `rows ${integer.format(first + 1)}–${integer.format(first + shown.length)} of ${integer.format(series.length)}`;
    $("series-prev").disabled = state.seriesPage === 0;
    $("series-next").disabled = state.seriesPage === pages - 1;
    const rows = document.createDocumentFragment();
    for (const point of shown) {
      rows.append(el("tr", {},
        el("td", { textContent: point.date }),
        el("td", { className: "num", textContent: integer.format(point.requests) }),
        el("td", { className: "num", textContent: integer.format(point.tokens) }),
        el("td", { className: "num", textContent: money(point.cost) })));
    }
    $("series-table").tBodies[0].replaceChildren(rows);
  }

  function compare(a, b) {
    return typeof a === "string" ? a.localeCompare(b) : (a ?? -1) - (b ?? -1);  // no value (null) sorts first
  }

  /** Cached prompt tokens ÷ prompt tokens, or null when there were no prompt tokens. */
  function hitRate(usage) {
    return usage.promptTokens > 0 ? usage.cachedPromptTokens / usage.promptTokens : null;
  }

  function percent(rate) {
    return rate === null ? "–" : `${(rate * 100).toFixed(1)}%`;
  }

  function renderModels() {
    const { summary, usageByModel } = state.report;
    const models = Object.values(usageByModel).map((model) => ({
      ...model, share: summary.totalCost > 0 ? model.totalCost / summary.totalCost : 0, cacheHitRate: hitRate(model),
    }));
    const { key, dir } = state.sort;
    models.sort((a, b) => compare(a[key], b[key]) * (dir === "asc" ? 1 : -1));
    for (const th of $("models-table").tHead.rows[0].cells) {
      th.setAttribute("aria-sort", th.dataset.key === key ? (dir === "asc" ? "ascending" : "descending") : "none");
    }
    const rows = document.createDocumentFragment();
    for (const model of models) {
      const bar = el("span");
      bar.style.width = `${(model.share * 100).toFixed(2)}%`;
      rows.append(el("tr", {},
        el("td", {}, el("span", { textContent: model.modelName }),
          model.modelName === model.modelId ? "" : el("span", { className: "id", textContent: model.modelId })),
        el("td", { textContent: model.provider }),
        el("td", { className: "num", textContent: integer.format(model.requestCount) }),
        el("td", { className: "num", textContent: integer.format(model.totalTokens) }),
        el("td", { className: "num", textContent: percent(model.cacheHitRate),
                   title: `${integer.format(model.cachedPromptTokens)} of ${integer.format(model.promptTokens)} prompt tokens cached` }),
        el("td", { className: "num", textContent: average.format(model.avgCostPerRequest) }),
        costCell(model.totalCost, model.unpricedRequests ? `${integer.format(model.unpricedRequests)} unpriced` : "",
          `${usd6.format(model.totalCost)} exactly`),
        el("td", {}, el("div", { className: "share" },
          el("div", { className: "bar" }, bar),
          el("span", { className: "pct", textContent: `${(model.share * 100).toFixed(1)}%` })))));
      rows.lastChild.dataset.modelId = model.modelId;
      if (model.unpricedRequests) rows.lastChild.classList.add("unpriced");
    }
    $("models-table").tBodies[0].replaceChildren(rows);
  }

  function renderConfigs() {
    const rows = document.createDocumentFragment();
    const selected = state.recent && state.recent.modelConfig.id;
    const configs = [...state.configs].sort((a, b) => b.usageCount - a.usageCount || compare(a.id, b.id));
    for (const config of configs) {
      const button = el("button", { type: "button", className: "secondary", textContent: "Recent requests" });
      button.addEventListener("click", () => loadRecent(config.id));
      const row = el("tr", { className: config.id === selected ? "selected" : "" },
        el("td", {}, el("span", { textContent: config.displayName }), el("span", { className: "id", textContent: config.id })),
        el("td", { textContent: config.modelId }),
        el("td", { textContent: config.provider }),
        el("td", { className: "num", textContent: integer.format(config.usageCount) }),
        el("td", { textContent: instantText(config.lastUsedAt, zone()) }),
        el("td", {}, button));
      row.dataset.configId = config.id;
      rows.append(row);
    }
    $("configs-table").tBodies[0].replaceChildren(rows);
    $("configs-empty").hidden = state.configs.length > 0;
  }

  function fillConfigFilter() {
    const select = $("config-filter");
    const current = select.value;
    const options = [el("option", { value: "", textContent: "All configurations" })];
    for (const config of state.configs) options.push(el("option", { value: config.id, textContent: config.displayName }));
    select.replaceChildren(...options);
    select.value = state.configs.some((config) => config.id === current) ? current : "";
  }

  function renderRecent() {
    if (!state.recent) return;
    const { modelConfig, recentUsage } = state.recent;
    $("recent").hidden = false;
    $("recent-title").textContent = `Recent requests of ${modelConfig.displayName} (${modelConfig.modelId}), times in ${zone()}`;
    const rows = document.createDocumentFragment();
    for (const event of recentUsage) {
      const billed = event.billingSource || "platform";
      const cost = costCell(event.estimatedCost, event.priced === false ? "unpriced" : "");
      rows.append(el("tr", {},
        el("td", { textContent: instantText(event.timestamp, zone()) }),
        el("td", { textContent: event.id }),
        el("td", { className: "num", textContent: integer.format(event.promptTokens) }),
        el("td", { className: "num", textContent: integer.format(event.completionTokens) }),
        el("td", { className: "num", textContent: integer.format(event.totalTokens) }),
        cost,
        el("td", { className: "num", textContent: event.executionTime == null ? "–" : event.executionTime.toFixed(2) }),
        el("td", {}, el("span", { className: `badge ${billed}`, textContent: billed === "user" ? "your key" : "platform" }))));
    }
    $("recent-table").tBodies[0].replaceChildren(rows);
    $("recent-empty").hidden = recentUsage.length > 0;
  }

  // --- tables wider than the screen ----------------------------------------------------

  /** Says on which side a table's scroller hides columns (data-overflow), for its fade and hint. */
  function markOverflow(scroller) {
    const hidden = scroller.scrollWidth - scroller.clientWidth;
    const sides = [];
    if (hidden > 1 && scroller.scrollLeft > 1) sides.push("left");
    if (hidden > 1 && hidden - scroller.scrollLeft > 1) sides.push("right");
    scroller.dataset.overflow = sides.join(" ");
    scroller.previousElementSibling.hidden = hidden <= 1;
  }

  /** Kept current as the screen, the columns or the scroll position change. */
  function watchOverflow() {
    const resized = new ResizeObserver((entries) => {
      for (const entry of entries) markOverflow(entry.target.closest(".table-scroll"));
    });
    for (const scroller of document.querySelectorAll(".table-scroll")) {
      scroller.before(el("p", { className: "scroll-hint", textContent: "scroll sideways for more →", hidden: true }));
      scroller.addEventListener("scroll", () => markOverflow(scroller), { passive: true });
      resized.observe(scroller);
      resized.observe(scroller.querySelector("table"));
    }
  }

  // --- the key -------------------------------------------------------------------------

  function useKey(key) {
    state.key = key;
    $("welcome").hidden = true;
    $("dashboard").hidden = false;
    $("key-forget").hidden = false;
    $("key-input").placeholder = "key in use for this tab";
    loadUsage();
    loadConfigs();
  }

  function forgetKey() {
    sessionStorage.removeItem(KEY_STORE);
    state.key = null;
    state.report = null;
    state.recent = null;
    $("dashboard").hidden = true;
    $("welcome").hidden = false;
    $("key-forget").hidden = true;
    $("key-input").placeholder = "usk_…";
    $("recent").hidden = true;
  }

  // --- wiring --------------------------------------------------------------------------

  function start() {
    restorePrefs();
    watchOverflow();
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const key = $("key-input").value.trim();
      if (!key) return;
      sessionStorage.setItem(KEY_STORE, key);
      $("key-input").value = "";
      clearMessage();
      useKey(key);
    });
    $("key-forget").addEventListener("click", () => {
      forgetKey();
      clearMessage();
    });
    const reload = () => {
      savePrefs();
      loadUsage();
    };
    $("period").addEventListener("change", () => {
      const custom = $("period").value === "custom";
      $("custom-range").hidden = !custom;
      if (custom && state.report) {
        $("start-date").value = state.report.meta.startDate;
        $("end-date").value = state.report.meta.endDate;
      }
      reload();
    });
    for (const id of ["start-date", "end-date", "granularity", "config-filter"]) $(id).addEventListener("change", reload);
    $("zone").addEventListener("change", () => {
      reload();
      renderConfigs();
      renderRecent();
    });
    $("refresh").addEventListener("click", () => {
      loadUsage({ conditional: true });
      loadConfigs();
    });
    $("download-csv").addEventListener("click", downloadCsv);
    $("series-details").addEventListener("toggle", () => {
      if ($("series-details").open && state.report) renderSeriesTable();
    });
    for (const [id, step] of [["series-prev", -1], ["series-next", 1]]) {
      $(id).addEventListener("click", () => {
        state.seriesPage += step;
        renderSeriesTable();
      });
    }
    for (const th of $("models-table").tHead.rows[0].cells) {
      th.querySelector("button").addEventListener("click", () => {
        const key = th.dataset.key;
        const text = key === "modelName" || key === "provider";
        state.sort = state.sort.key === key
          ? { key, dir: state.sort.dir === "asc" ? "desc" : "asc" }
          : { key, dir: text ? "asc" : "desc" };
        if (state.report) renderModels();
      });
    }
    let width = 0;
    new ResizeObserver(() => {
      if (!state.chart || $("chart").clientWidth === width) return;
      width = $("chart").clientWidth;
      state.chart.setSize(chartSize());
    }).observe($("chart"));
    setInterval(() => {
      if (state.key && state.report && document.visibilityState === "visible") loadUsage({ conditional: true });
    }, POLL_MS);
    const stored = sessionStorage.getItem(KEY_STORE);
    if (stored) useKey(stored);
    else document.body.dataset.state = "idle";
  }

  document.addEventListener("DOMContentLoaded", start);
})();
