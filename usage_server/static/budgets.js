/* usage_server dashboard: the budgets panel.
 *
 * Reads GET /v1/budgets and each budget's GET /v1/budgets/<id>/alerts with the key the
 * dashboard keeps in sessionStorage, whenever a key is entered, on Refresh and every minute.
 * Each budget gets a bar: spent against the amount, the forecast behind it, and a mark
 * per threshold (red once crossed); below, its five most recent alerts and their delivery.
 */
(function () {
  "use strict";

  const KEY_STORE = "usage_server.key";
  const POLL_MS = 60000;
  const RECENT_ALERTS = 5;
  const $ = (id) => document.getElementById(id);
  const usd = new Intl.NumberFormat(undefined, { style: "currency", currency: "USD", minimumFractionDigits: 2, maximumFractionDigits: 6 });
  let seq = 0;

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    Object.assign(node, props || {});
    for (const child of children) node.append(child);
    return node;
  }

  async function get(path, key) {
    const response = await fetch(path, { headers: { Authorization: `Bearer ${key}`, Accept: "application/json" },
      cache: "no-store", credentials: "omit" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    return response.json();
  }

  /** Where a dollar amount sits on a bar whose right end is `scale` dollars, in percent. */
  function at(value, scale) {
    return `${Math.min(100, Math.max(0, (value / scale) * 100))}%`;
  }

  function deliveryText(delivery) {
    if (!delivery) return ["none", "no webhook"];
    const attempts = `${delivery.attempts} attempt${delivery.attempts === 1 ? "" : "s"}`;
    const error = delivery.lastError ? ` · ${delivery.lastError}` : "";
    return [delivery.state, `${delivery.state} · ${attempts}${error}`];
  }

  function renderBudget(budget, alerts) {
    const { current } = budget;
    const scale = Math.max(budget.amount, current.spent, current.forecast,
      ...budget.thresholds.map((t) => (budget.amount * t) / 100));
    const bar = el("div", { className: "budget-bar", role: "img",
      ariaLabel: `${usd.format(current.spent)} spent of ${usd.format(budget.amount)}, forecast ${usd.format(current.forecast)}` });
    const forecast = el("span", { className: "forecast" });
    forecast.style.width = at(current.forecast, scale);
    const spent = el("span", { className: "spent" });
    spent.style.width = at(current.spent, scale);
    bar.append(forecast, spent);
    for (const threshold of budget.thresholds) {
      const mark = el("span", { className: `mark${current.crossed.includes(threshold) ? " crossed" : ""}`,
        title: `${threshold}% = ${usd.format((budget.amount * threshold) / 100)}` });
      mark.style.left = at((budget.amount * threshold) / 100, scale);
      mark.dataset.threshold = threshold;
      bar.append(mark);
    }
    const list = el("ul", { className: "budget-alerts" });
    for (const alert of alerts.slice(0, RECENT_ALERTS)) {
      const [state, text] = deliveryText(alert.delivery);
      const item = el("li", {},
        el("span", { className: "alert-threshold", textContent: `${alert.threshold}% reached` }),
        el("span", { className: "muted", textContent: `${alert.crossedAt} · ${usd.format(alert.spent)}` }),
        el("span", { className: `badge ${state}`, textContent: text }));
      item.dataset.alertId = alert.id;
      list.append(item);
    }
    if (!alerts.length) list.append(el("li", { className: "muted", textContent: "No alert this period or before." }));
    const scope = budget.modelConfigId ? `config ${budget.modelConfigId}` : "all usage";
    const node = el("article", { className: `budget${current.spent > budget.amount ? " over" : ""}` },
      el("div", { className: "budget-head" },
        el("h3", { textContent: budget.name }),
        el("span", { className: "muted", textContent: `per ${budget.period} (${budget.timezone}) · ${scope}` })),
      el("p", { className: "budget-figures" },
        el("span", { className: "budget-spent", textContent: `${usd.format(current.spent)} of ${usd.format(budget.amount)}` }),
        " · ", el("span", { className: "budget-percent", textContent: `${current.percentUsed}%` }),
        " · forecast ", el("span", { className: "budget-forecast", textContent: usd.format(current.forecast) })),
      bar, list);
    node.dataset.budgetId = budget.id;
    return node;
  }

  async function load() {
    const key = sessionStorage.getItem(KEY_STORE);
    if (!key || !$("budgets-list")) return;
    const mine = ++seq;
    try {
      const budgets = (await get("/v1/budgets", key)).data;
      const alerts = await Promise.all(budgets.map((b) => get(`/v1/budgets/${encodeURIComponent(b.id)}/alerts`, key)));
      if (mine !== seq) return;
      $("budgets-list").replaceChildren(...budgets.map((budget, i) => renderBudget(budget, alerts[i].data)));
      $("budgets-empty").hidden = budgets.length > 0;
      $("budgets-panel").dataset.loaded = String(mine);
    } catch (_) {
      if (mine === seq) $("budgets-empty").hidden = true; // the dashboard's own requests say what went wrong
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    // registered after dashboard.js's handlers: the key is stored by the time these run
    $("key-form").addEventListener("submit", () => setTimeout(load));
    $("refresh").addEventListener("click", load);
    setInterval(() => { if (document.visibilityState === "visible") load(); }, POLL_MS);
    load();
  });
})();
