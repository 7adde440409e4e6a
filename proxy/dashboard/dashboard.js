// tunegate spend dashboard: the finance JSON APIs drawn as SVG and HTML, with no framework and no build step.
// The key lives in sessionStorage (this tab only) and travels as "Authorization: Bearer", never in a URL.
// Money is handled as BigInt counts of 1e-8 USD, parsed from the API's decimal strings, so every total
// shown is the exact sum of the figures the API returned.
"use strict";

(() => {
  const STORAGE_KEY = "tunegate.dashboard.key";
  const SVG_NS = "http://www.w3.org/2000/svg";
  const PALETTE = [
    "#2563eb", "#f59e0b", "#10b981", "#8b5cf6", "#ef4444",
    "#06b6d4", "#ec4899", "#84cc16", "#f97316", "#64748b",
  ];
  const TOP_N = 8;
  const SCALE = 100000000n; // 1e8: units of money per dollar

  const state = { key: null, from: null, to: null, data: null, colors: new Map() };
  const $ = (id) => document.getElementById(id);

  // ---- money and numbers -----------------------------------------------------------------------------
  function money(text) {
    // "12.34500000" → 1234500000n (exact); anything unparsable → 0n
    const match = /^(-?)(\d*)(?:\.(\d*))?$/.exec(String(text ?? "0").trim());
    if (!match) return 0n;
    const frac = ((match[3] || "") + "00000000").slice(0, 8);
    const units = BigInt(match[2] || "0") * SCALE + BigInt(frac);
    return match[1] ? -units : units;
  }

  function moneyText(units) {
    // Exact decimal string with 8 places, as the API writes it.
    const negative = units < 0n;
    const abs = negative ? -units : units;
    const text = (abs / SCALE).toString() + "." + (abs % SCALE).toString().padStart(8, "0");
    return (negative ? "-" : "") + text;
  }

  function groupThousands(digits) {
    return digits.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  }

  function usd(units) {
    // Cents from one cent up (half-up); below a cent, three significant digits so small spend is not hidden.
    const negative = units < 0n;
    const abs = negative ? -units : units;
    const sign = negative ? "-" : "";
    if (abs === 0n) return "$0.00";
    if (abs >= 1000000n) {
      const cents = (abs + 500000n) / 1000000n;
      return sign + "$" + groupThousands((cents / 100n).toString()) + "." + (cents % 100n).toString().padStart(2, "0");
    }
    const frac = abs.toString().padStart(8, "0");
    const first = frac.search(/[1-9]/);
    const places = Math.min(8, first + 3);
    const step = 10n ** BigInt(8 - places);
    const rounded = (abs + step / 2n) / step;
    return sign + "$0." + rounded.toString().padStart(places, "0").replace(/0+$/, "");
  }

  function usdShort(value) {
    // Axis ticks: a float is fine here.
    if (value === 0) return "$0";
    if (value >= 1000) return "$" + (value / 1000).toLocaleString("en-US", { maximumFractionDigits: 1 }) + "k";
    if (value >= 1) return "$" + value.toLocaleString("en-US", { maximumFractionDigits: 2 });
    return "$" + value.toLocaleString("en-US", { maximumSignificantDigits: 2 });
  }

  const int = (n) => Math.round(Number(n) || 0).toLocaleString("en-US");
  const pct = (n) => (Number(n) || 0).toLocaleString("en-US", { maximumFractionDigits: 1 }) + "%";
  const dollars = (units) => Number(units) / 1e8;

  // ---- dates (UTC days, as the usage records are) ------------------------------------------------------
  const isoDay = (date) => date.toISOString().slice(0, 10);
  function today() {
    return isoDay(new Date());
  }
  function addDays(day, n) {
    const date = new Date(day + "T00:00:00Z");
    date.setUTCDate(date.getUTCDate() + n);
    return isoDay(date);
  }
  function daysBetween(from, to) {
    const days = [];
    for (let day = from; day <= to && days.length < 800; day = addDays(day, 1)) days.push(day);
    return days;
  }
  function shortDay(day) {
    const date = new Date(day + "T00:00:00Z");
    return date.toLocaleDateString("en-US", { month: "short", day: "numeric", timeZone: "UTC" });
  }

  // ---- DOM helpers (textContent only: nothing from the API is ever parsed as HTML) ----------------------
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (name === "text") node.textContent = value;
      else if (name === "class") node.className = value;
      else if (name === "style") Object.assign(node.style, value);
      else node.setAttribute(name, value);
    }
    for (const child of children) if (child != null) node.append(child);
    return node;
  }
  function svg(tag, attrs = {}, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (name === "text") node.textContent = value;
      else node.setAttribute(name, String(value));
    }
    for (const child of children) if (child != null) node.append(child);
    return node;
  }

  // ---- the API ------------------------------------------------------------------------------------------
  class AuthError extends Error {}

  async function api(path) {
    const response = await fetch(path, {
      headers: { Authorization: "Bearer " + state.key, Accept: "application/json" },
      cache: "no-store",
      credentials: "omit",
    });
    if (response.status === 401) throw new AuthError("That key was not accepted: sign in with a finance key or the admin key.");
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    if (!response.ok) {
      const message = body && body.error && body.error.message ? body.error.message : "HTTP " + response.status;
      const error = new Error(message);
      error.status = response.status;
      throw error;
    }
    return body;
  }

  async function optional(path) {
    // Budgets and savings may be off (or not for this key): the rest of the page still shows.
    try {
      return { ok: true, body: await api(path) };
    } catch (error) {
      if (error instanceof AuthError) throw error;
      return { ok: false, error: error.message, status: error.status };
    }
  }

  function usagePath(groupBy) {
    const query = new URLSearchParams({ from: state.from, to: state.to, group_by: groupBy, format: "json" });
    return "/admin/usage?" + query.toString();
  }

  async function load() {
    const [byTeamDay, byAlias, byModel] = await Promise.all([
      api(usagePath("team,day")),
      api(usagePath("alias")),
      api(usagePath("model")),
    ]);
    const budgets = await optional("/admin/budgets");
    const aliases = byAlias.data.map((row) => row.alias).filter(Boolean);
    const savings = await Promise.all(
      aliases.map((alias) => optional("/admin/savings?" + new URLSearchParams({ alias }).toString()))
    );
    return { byTeamDay, byAlias, byModel, budgets, savings: savings.map((s, i) => ({ alias: aliases[i], ...s })) };
  }

  // ---- rendering --------------------------------------------------------------------------------------
  function colorOf(team) {
    if (!state.colors.has(team)) state.colors.set(team, PALETTE[state.colors.size % PALETTE.length]);
    return state.colors.get(team);
  }

  function render() {
    const data = state.data;
    if (!data) return;
    renderKpis(data.byTeamDay);
    renderSpend(data.byTeamDay);
    renderRanked($("aliases"), data.byAlias, "alias");
    renderRanked($("models"), data.byModel, "model");
    renderBudgets(data.budgets);
    renderSavings(data.savings);
  }

  function renderKpis(report) {
    const totals = report.totals || {};
    const cost = money(totals.cost_usd);
    $("kpi-cost").textContent = usd(cost);
    $("kpi-cost").dataset.value = moneyText(cost);
    $("kpi-range").textContent = shortDay(state.from) + " – " + shortDay(state.to) + " (UTC)";
    $("kpi-requests").textContent = int(totals.requests);
    $("kpi-requests").dataset.value = String(totals.requests || 0);
    const teams = new Set(report.data.map((row) => row.team));
    $("kpi-teams").textContent = teams.size + (teams.size === 1 ? " team" : " teams");
    const tokens = (totals.prompt_tokens || 0) + (totals.completion_tokens || 0);
    $("kpi-tokens").textContent = int(tokens);
    $("kpi-tokens").dataset.value = String(tokens);
    $("kpi-tokens-note").textContent =
      int(totals.prompt_tokens) + " prompt · " + int(totals.completion_tokens) + " completion · " +
      int(totals.cached_tokens) + " cached";
    $("kpi-saved").textContent = int(totals.saved_tokens);
    $("kpi-saved").dataset.value = String(totals.saved_tokens || 0);
    $("kpi-injected").textContent = int(totals.injected_tokens) + " injected by fallback prompts";
    $("kpi-unpriced").textContent = int(totals.unpriced_requests);
    $("kpi-unpriced").dataset.value = String(totals.unpriced_requests || 0);
    $("kpi-unpriced-card").classList.toggle("warn", (totals.unpriced_requests || 0) > 0);
  }

  function niceStep(max, ticks) {
    const raw = max / ticks;
    const power = 10 ** Math.floor(Math.log10(raw));
    const unit = raw / power;
    return (unit <= 1 ? 1 : unit <= 2 ? 2 : unit <= 2.5 ? 2.5 : unit <= 5 ? 5 : 10) * power;
  }

  function renderSpend(report) {
    const chart = $("spend-chart");
    const legend = $("spend-legend");
    chart.replaceChildren();
    legend.replaceChildren();
    const days = daysBetween(state.from, state.to);
    const byTeam = new Map();
    const byDay = new Map(days.map((day) => [day, new Map()]));
    for (const row of report.data) {
      const cost = money(row.cost_usd);
      byTeam.set(row.team, (byTeam.get(row.team) || 0n) + cost);
      const cell = byDay.get(row.day);
      if (cell) cell.set(row.team, { cost, row });
    }
    const teams = [...byTeam.keys()].sort((a, b) => (byTeam.get(b) > byTeam.get(a) ? 1 : byTeam.get(b) < byTeam.get(a) ? -1 : a.localeCompare(b)));
    teams.forEach(colorOf);
    if (!report.data.length) {
      chart.append(el("p", { class: "empty", text: "No usage in this range." }));
      return;
    }
    for (const team of teams) {
      legend.append(
        el("span", { class: "legend-item", "data-team": team },
          el("span", { class: "swatch", style: { background: colorOf(team) } }),
          el("span", { text: team }),
          el("span", { class: "num", text: usd(byTeam.get(team)) }))
      );
    }
    const width = Math.max(320, chart.clientWidth || 900);
    const height = 320;
    const margin = { top: 22, right: 8, bottom: 28, left: 64 };
    const plotW = width - margin.left - margin.right;
    const plotH = height - margin.top - margin.bottom;
    const totals = days.map((day) => [...byDay.get(day).values()].reduce((sum, cell) => sum + cell.cost, 0n));
    const maxTotal = Math.max(...totals.map(dollars), 0);
    const step = maxTotal > 0 ? niceStep(maxTotal, 4) : 1;
    const top = Math.max(step, Math.ceil(maxTotal / step) * step);
    const y = (value) => margin.top + plotH - (value / top) * plotH;
    const band = plotW / days.length;
    const barW = Math.max(2, Math.min(46, band * 0.68));
    const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, "aria-hidden": "true" });
    const axis = svg("g", { class: "axis" });
    for (let tick = 0; tick <= top + step / 2; tick += step) {
      axis.append(svg("line", { class: tick === 0 ? "baseline" : "gridline", x1: margin.left, x2: width - margin.right, y1: y(tick), y2: y(tick) }));
      axis.append(svg("text", { x: margin.left - 8, y: y(tick) + 4, "text-anchor": "end", text: usdShort(tick) }));
    }
    const every = Math.ceil(days.length / Math.max(1, Math.floor(plotW / 64)));
    days.forEach((day, i) => {
      if (i % every === 0) {
        axis.append(svg("text", { x: margin.left + band * i + band / 2, y: height - 8, "text-anchor": "middle", text: shortDay(day) }));
      }
    });
    root.append(axis);
    const bars = svg("g", { class: "bars" });
    days.forEach((day, i) => {
      const cells = byDay.get(day);
      const x = margin.left + band * i + (band - barW) / 2;
      const group = svg("g", { class: "day", "data-day": day, "data-total": moneyText(totals[i]) });
      let base = 0;
      for (const team of teams) {
        const cell = cells.get(team);
        if (!cell) continue;
        const value = dollars(cell.cost);
        const y0 = y(base);
        const y1 = y(base + value);
        base += value;
        group.append(
          svg("rect", {
            class: "segment", x, y: y1, width: barW, height: Math.max(0, y0 - y1), fill: colorOf(team),
            "data-team": team, "data-day": day, "data-cost": moneyText(cell.cost), "data-requests": cell.row.requests,
          }, svg("title", { text: `${team} · ${day} · ${usd(cell.cost)}` }))
        );
      }
      if (totals[i] > 0n && band >= 34) {
        group.append(svg("text", { class: "total-label", x: x + barW / 2, y: y(base) - 5, "text-anchor": "middle", text: usd(totals[i]) }));
      }
      const hit = svg("rect", { class: "hit", x: margin.left + band * i, y: margin.top, width: band, height: plotH });
      hit.addEventListener("mousemove", (event) => showTooltip(event, day, cells, totals[i], teams));
      hit.addEventListener("mouseleave", hideTooltip);
      group.append(hit);
      bars.append(group);
    });
    root.append(bars);
    chart.append(root);
  }

  function showTooltip(event, day, cells, total, teams) {
    const tip = $("tooltip");
    tip.replaceChildren(el("div", { class: "head" }, el("span", { text: shortDay(day) + " · " + usd(total) })));
    for (const team of teams) {
      const cell = cells.get(team);
      if (!cell) continue;
      tip.append(
        el("div", { class: "row" },
          el("span", {}, el("span", { class: "swatch", style: { background: colorOf(team), marginRight: "6px" } }), team),
          el("span", { text: usd(cell.cost) }))
      );
    }
    tip.hidden = false;
    const card = tip.parentElement.getBoundingClientRect();
    const left = Math.min(event.clientX - card.left + 14, card.width - tip.offsetWidth - 8);
    tip.style.left = Math.max(8, left) + "px";
    tip.style.top = event.clientY - card.top + 14 + "px";
  }
  function hideTooltip() {
    $("tooltip").hidden = true;
  }

  function renderRanked(list, report, key) {
    list.replaceChildren();
    const rows = [...report.data].sort((a, b) => {
      const diff = money(b.cost_usd) - money(a.cost_usd);
      return diff > 0n ? 1 : diff < 0n ? -1 : (b.requests || 0) - (a.requests || 0);
    });
    if (!rows.length) {
      list.append(el("li", { class: "empty", text: "No usage in this range." }));
      return;
    }
    const total = money((report.totals || {}).cost_usd);
    const max = rows.length ? money(rows[0].cost_usd) : 0n;
    for (const row of rows.slice(0, TOP_N)) {
      const cost = money(row.cost_usd);
      const width = max > 0n ? Number((cost * 10000n) / max) / 100 : 0;
      const share = total > 0n ? Number((cost * 10000n) / total) / 100 : 0;
      const meta = `${int(row.requests)} requests · ${int((row.prompt_tokens || 0) + (row.completion_tokens || 0))} tokens · ${pct(share)} of spend`;
      const unpriced = row.unpriced_requests ? ` · ${int(row.unpriced_requests)} unpriced` : "";
      list.append(
        el("li", { class: "bar-row", "data-name": row[key], "data-cost": moneyText(cost), "data-requests": row.requests },
          el("span", { class: "bar-name", text: row[key], title: row[key] }),
          el("span", { class: "bar-value", text: usd(cost) }),
          el("span", { class: "bar-track" }, el("span", { class: "bar-fill", style: { width: width + "%", display: "block" } })),
          el("span", { class: "bar-meta", text: meta + unpriced }))
      );
    }
    if (rows.length > TOP_N) list.append(el("li", { class: "bar-meta", text: `and ${rows.length - TOP_N} more (in the CSV)` }));
  }

  function renderBudgets(result) {
    const box = $("budgets");
    box.replaceChildren();
    if (!result.ok) {
      box.append(el("p", { class: "empty", text: "Budgets are not available: " + result.error }));
      return;
    }
    const rows = result.body.data || [];
    if (!rows.length) {
      box.append(el("p", { class: "empty", text: "No team has a budget." }));
      return;
    }
    for (const row of rows) {
      const used = Number(row.used_pct) || 0;
      const threshold = Number(row.soft_threshold_pct) || 0;
      const scale = Math.max(100, used);
      const level = row.state === "hard" || used >= 100 ? "hard" : row.state === "soft" || used >= threshold ? "soft" : "ok";
      const label = { ok: "on track", soft: "over threshold", hard: "budget spent" }[level];
      box.append(
        el("div", { class: `budget ${level}`, "data-team": row.team, "data-used-pct": String(row.used_pct), "data-state": row.state },
          el("span", { class: "budget-team", text: row.team, title: row.team }),
          el("div", { class: "budget-track", title: `${pct(used)} of ${usd(money(row.budget_usd))}` },
            el("span", { class: "budget-fill", style: { width: (Math.min(used, scale) / scale) * 100 + "%" } }),
            scale > 100 ? el("span", { class: "budget-limit", style: { left: (100 / scale) * 100 + "%" }, title: "the budget" }) : null,
            el("span", { class: "budget-threshold", style: { left: (threshold / scale) * 100 + "%" }, title: `soft threshold ${pct(threshold)}` })),
          el("div", { class: "budget-figures" },
            el("span", { class: "pct", text: pct(used) }),
            el("span", { class: `state ${level}`, text: label }),
            el("div", { class: "muted small", text: `${usd(money(row.spent_usd))} of ${usd(money(row.budget_usd))} · ${row.month || ""}` })))
      );
    }
  }

  function savingsRow(alias, body) {
    // One alias's answer to "does the fine-tune pay off?", flat: what the card shows and the CSV holds.
    const tuned = body.fine_tuned || {};
    const based = body.base_with_prompt || {};
    const prices = body.at_prices || {};
    const training = body.training || {};
    return {
      alias,
      fine_tuned_model: body.fine_tuned_model,
      base_model: body.base_model,
      fine_tuned_requests: tuned.requests || 0,
      base_with_prompt_requests: based.requests || 0,
      saved_tokens: tuned.saved_tokens || 0,
      saved_usd: tuned.saved_usd,
      injected_tokens: based.injected_tokens || 0,
      injected_usd: based.injected_usd,
      difference_usd: prices.difference_usd,
      difference_per_request_usd: prices.difference_per_request_usd,
      training_cost_usd: training.cost_usd,
      break_even_requests: body.break_even_requests,
      paid_off: body.paid_off,
    };
  }
  const SAVINGS_COLUMNS = Object.keys(savingsRow("", {}));

  function savingsRows() {
    // Only aliases with something to compare: a fine-tuned model, and a base model with a prompt.
    return state.data.savings
      .filter((r) => r.ok && r.body.fine_tuned_model && r.body.base_model)
      .map((r) => savingsRow(r.alias, r.body));
  }

  function renderSavings(results) {
    const box = $("savings");
    box.replaceChildren();
    const rows = savingsRows();
    if (!rows.length) {
      const reason = results.find((r) => !r.ok && r.status !== 404);
      const text = reason
        ? "Savings are not available: " + reason.error
        : "No alias used in this range is served by a fine-tuned model.";
      box.append(el("p", { class: "empty", text }));
      return;
    }
    for (const row of rows) {
      const ft = Number(row.fine_tuned_requests);
      const fb = Number(row.base_with_prompt_requests);
      const difference = row.difference_usd == null ? null : money(row.difference_usd);
      const verdict = row.paid_off
        ? ["pays", "paid off"]
        : difference != null && difference > 0n
          ? ["not-yet", "not yet paid off"]
          : ["none", "no saving"];
      const facts = el("dl", { class: "facts" });
      const fact = (name, value, key) => {
        if (value == null) return;
        facts.append(el("dt", { text: name }), el("dd", { text: value, "data-fact": key }));
      };
      fact("Served by the fine-tune", int(ft), "fine_tuned_requests");
      fact("Served by base + prompt", int(fb), "base_with_prompt_requests");
      fact("Prompt tokens saved", int(row.saved_tokens), "saved_tokens");
      fact("Prompt tokens injected", int(row.injected_tokens), "injected_tokens");
      const compared = difference == null ? null : difference >= 0n ? "saves " + usd(difference) : "costs " + usd(-difference) + " more";
      fact("Fine-tune vs base + prompt", compared, "difference_usd");
      fact("Training cost", row.training_cost_usd == null ? null : usd(money(row.training_cost_usd)), "training_cost_usd");
      fact(
        "Break-even after",
        row.break_even_requests == null ? "never at these prices" : int(row.break_even_requests) + " requests",
        "break_even_requests"
      );
      box.append(
        el("article", { class: "saving", "data-alias": row.alias },
          el("div", { class: "saving-head" },
            el("span", { class: "saving-alias", text: row.alias, title: `${row.fine_tuned_model} vs ${row.base_model || "—"}` }),
            el("span", { class: `verdict ${verdict[0]}`, text: verdict[1] })),
          el("div", { class: "split", title: `${int(ft)} by the fine-tune · ${int(fb)} by base + prompt` },
            el("span", { class: "ft", style: { width: (ft + fb ? (ft / (ft + fb)) * 100 : 0) + "%" } }),
            el("span", { class: "fb", style: { width: (ft + fb ? (fb / (ft + fb)) * 100 : 0) + "%" } })),
          el("div", { class: "muted small", text: `${row.fine_tuned_model} vs ${row.base_model || "—"}` }),
          facts)
      );
    }
  }

  // ---- CSV of what is shown -----------------------------------------------------------------------------
  const USAGE_COLUMNS = ["requests", "prompt_tokens", "completion_tokens", "cached_tokens", "injected_tokens", "saved_tokens", "cost_usd", "unpriced_requests"];

  function csvCell(value) {
    const text = value == null ? "" : String(value);
    // A name starting with =, +, - or @ would be a formula in a spreadsheet: make it text. Numbers stay numbers.
    const safe = /^[=+\-@\t\r]/.test(text) && !/^-?\d+(\.\d+)?$/.test(text) ? "'" + text : text;
    return /[",\n\r]/.test(safe) ? '"' + safe.replace(/"/g, '""') + '"' : safe;
  }

  function csvTable(columns, rows) {
    return [columns, ...rows.map((row) => columns.map((c) => row[c]))].map((r) => r.map(csvCell).join(",")).join("\r\n") + "\r\n";
  }

  function csvFor(section) {
    const data = state.data;
    if (section === "spend") {
      const rows = [...data.byTeamDay.data].sort((a, b) => (a.day + a.team).localeCompare(b.day + b.team));
      return csvTable(["day", "team", ...USAGE_COLUMNS], rows);
    }
    if (section === "aliases") return csvTable(["alias", ...USAGE_COLUMNS], data.byAlias.data);
    if (section === "models") return csvTable(["model", ...USAGE_COLUMNS], data.byModel.data);
    if (section === "budgets") {
      const rows = data.budgets.ok ? data.budgets.body.data : [];
      return csvTable(["team", "month", "budget_usd", "soft_threshold_pct", "spent_usd", "used_pct", "state"], rows);
    }
    return csvTable(SAVINGS_COLUMNS, savingsRows());
  }

  function download(section) {
    if (!state.data) return;
    const blob = new Blob([csvFor(section)], { type: "text/csv;charset=utf-8" });
    const link = el("a", { href: URL.createObjectURL(blob), download: `tunegate-${section}-${state.from}-to-${state.to}.csv` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  }

  // ---- flow ---------------------------------------------------------------------------------------------
  function showLogin(message) {
    state.key = null;
    state.data = null;
    sessionStorage.removeItem(STORAGE_KEY);
    $("app").hidden = true;
    $("login").hidden = false;
    $("login-error").hidden = !message;
    $("login-error").textContent = message || "";
    document.body.dataset.state = "login";
    $("key").focus();
  }

  async function refresh() {
    document.body.dataset.state = "loading";
    $("app-error").hidden = true;
    for (const button of document.querySelectorAll("[data-preset]")) button.setAttribute("aria-pressed", "false");
    try {
      state.data = await load();
    } catch (error) {
      if (error instanceof AuthError || error.status === 403) {
        showLogin(error.status === 403 ? "This key may not read usage: sign in with a finance or admin key." : error.message);
        return false;
      }
      // Before sign-in the form is what shows; after it, the banner above the charts.
      const box = $("app").hidden ? $("login-error") : $("app-error");
      box.textContent = "The dashboard could not load: " + error.message;
      box.hidden = false;
      document.body.dataset.state = "error";
      return false;
    }
    $("login").hidden = true;
    $("app").hidden = false;
    render();
    document.body.dataset.state = "ready";
    return true;
  }

  function setRange(from, to) {
    state.from = from;
    state.to = to;
    $("from").value = from;
    $("to").value = to;
  }

  function init() {
    const end = today();
    setRange(addDays(end, -13), end);
    $("login-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const key = $("key").value.trim();
      $("key").value = "";
      if (!key) {
        showLogin("Enter a key.");
        return;
      }
      state.key = key;
      $("login-submit").disabled = true;
      try {
        if (await refresh()) sessionStorage.setItem(STORAGE_KEY, key);
      } finally {
        $("login-submit").disabled = false;
      }
    });
    $("range-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const from = $("from").value;
      const to = $("to").value;
      if (!from || !to || from > to) {
        $("app-error").textContent = "Choose a start day on or before the end day.";
        $("app-error").hidden = false;
        return;
      }
      setRange(from, to);
      refresh();
    });
    for (const button of document.querySelectorAll("[data-preset]")) {
      button.addEventListener("click", () => {
        const end = today();
        const preset = button.dataset.preset;
        setRange(preset === "month" ? end.slice(0, 8) + "01" : addDays(end, -(Number(preset) - 1)), end);
        refresh().then(() => button.setAttribute("aria-pressed", "true"));
      });
    }
    for (const button of document.querySelectorAll("[data-csv]")) {
      button.addEventListener("click", () => download(button.dataset.csv));
    }
    $("logout").addEventListener("click", () => showLogin(""));
    let resizeTimer = null;
    window.addEventListener("resize", () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(() => state.data && renderSpend(state.data.byTeamDay), 120);
    });
    const saved = sessionStorage.getItem(STORAGE_KEY);
    if (saved) {
      state.key = saved;
      refresh();
    } else {
      showLogin("");
    }
  }

  window.tunegateDashboard = { csvFor: (section) => (state.data ? csvFor(section) : null) };
  document.addEventListener("DOMContentLoaded", init);
})();
