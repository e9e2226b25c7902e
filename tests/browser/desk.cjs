// Drives Debian's Chromium through the desk panel (and optionally a CRM page with the SDK) for
// the desk service's end-to-end test:
//
//   SB_PLAYWRIGHT=<…/node_modules/playwright-core> [SB_CHROMIUM=/usr/bin/chromium] \
//     node tests/browser/desk.cjs plan.json
//
// scripts/browser.sh (ensure_browser_tools) installs both and exports the two variables. The plan
// (written by the Rust test):
//
//   {"panel_url": "http://127.0.0.1:P/panel?token=…&fiche_num=%2B7…",
//    "screenshot_path": "/abs/desk.png",
//    "expect_dial_prefill": "+7…",                               (optional)
//    "sdk_page": {"url": "http://127.0.0.1:Q/crm-page.html?desk=…&token=…",      (optional)
//                 "expect_event": "incoming", "expect_contact_name": "Bob Smith",
//                 "after_step": "ringing"},          (checked after that step; default: the last)
//    "steps": [{"name": "ringing",
//               "post": {"url", "method": "POST", "headers": {…}, "body": "…"} | [post, …],
//               "fill": {"<data-testid>": "text", …},       (optional, after the posts)
//               "select": {"<data-testid>": "value", …},    (optional, after the fills; waits
//                                                            until the option exists)
//               "click": "<data-testid>",                   (optional, after the posts)
//               "select_status": "break",                   (optional, after the posts)
//               "expect": {"state", "contact_name", "customer_number", "popup_url", "pop_link",
//                          "recent_calls_min", "connection", "agent_name", "dial_result",
//                          "status", "wrap_up_result"},
//               "timeout_ms": 10000}]}
//
// expect: state = the call card's data-state; contact_name = exact text; customer_number,
// dial_result, wrap_up_result = substrings; popup_url = a new page opens at exactly this URL during the step
// (null: no new page opens); pop_link = the visible pop link's href (then it is clicked and a new
// page must open at that URL; null: no visible pop link); recent_calls_min = at least that many
// recent calls; connection = body[data-connection]; agent_name = exact text; status = the status
// select's value. Every check is retried until it holds or the step's time is up.
//
// Prints `browser: N steps passed` and exits 0, or one line `browser: FAILED: <reason>` and the
// pages' console messages on stderr and exits 1. A full-page screenshot of the panel is saved at
// screenshot_path either way. Any uncaught error in a page fails the run.
"use strict";

const fs = require("fs");

const CHROMIUM_ARGS = [
  "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
  "--disable-component-update", "--no-first-run", "--disable-sync",
];
const POLL_MS = 100;
const NO_POPUP_GRACE_MS = 500;

class Failure extends Error {}
const fail = (message) => { throw new Failure(message); };

const logs = [];
const pageErrors = [];
const openedPages = []; // every page the context opened after the first ones: {page, at}

// fatal: an uncaught error in this page fails the run (the panel and the SDK page; not the CRM
// windows that a screen-pop opens, which are the test's stand-ins).
function watch(page, label, fatal) {
  page.on("console", (m) => logs.push(`[${label}] ${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => {
    if (fatal) pageErrors.push(`[${label}] ${e.message}`);
    logs.push(`[${label}] pageerror: ${e.stack || e.message}`);
  });
  page.on("requestfailed", (r) => {
    const failure = r.failure();
    logs.push(`[${label}] request failed: ${r.method()} ${r.url()} ${failure ? failure.errorText : ""}`);
  });
  page.on("crash", () => { if (fatal) pageErrors.push(`[${label}] the page crashed`); });
}

function checkPageErrors(where) {
  if (pageErrors.length) fail(`page error ${where}: ${pageErrors[0]}`);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function sameUrl(actual, expected) {
  if (actual === expected) return true;
  try { return actual === new URL(expected).href; } catch (_) { return false; }
}

const show = (v) => JSON.stringify(v);

// What the panel shows, in the terms of the plan's expectations.
function snapshot() {
  const q = (id) => document.querySelector(`[data-testid="${id}"]`);
  const visible = (e) => !!e && e.getClientRects().length > 0 && getComputedStyle(e).visibility !== "hidden";
  const text = (id) => { const e = q(id); return e ? e.textContent.replace(/\s+/g, " ").trim() : null; };
  const card = q("call-card");
  const pop = q("pop-link");
  const recent = q("recent-calls");
  const status = q("status-select");
  return {
    connection: document.body.getAttribute("data-connection"),
    state: card ? card.getAttribute("data-state") : null,
    call_id: card ? card.getAttribute("data-call-id") : null,
    contact_name: text("contact-name"),
    customer_number: text("customer-number"),
    pop_link: visible(pop) && pop.hasAttribute("href") ? pop.getAttribute("href") : null,
    pop_link_resolved: visible(pop) && pop.hasAttribute("href") ? pop.href : null,
    recent_calls: recent ? recent.querySelectorAll("li").length : 0,
    agent_name: text("agent-name"),
    dial_result: text("dial-result"),
    wrap_up_result: text("wrap-up-result"),
    status: status ? status.value : null,
  };
}

// The unmet expectations, as sentences.
function mismatches(expect, s) {
  const out = [];
  const has = (k) => Object.prototype.hasOwnProperty.call(expect, k);
  if (has("state") && s.state !== expect.state) out.push(`call card data-state is ${show(s.state)}, expected ${show(expect.state)}`);
  if (has("contact_name") && s.contact_name !== (expect.contact_name === null ? "" : expect.contact_name)) {
    out.push(`contact name is ${show(s.contact_name)}, expected ${show(expect.contact_name)}`);
  }
  if (has("customer_number") && !(s.customer_number || "").includes(expect.customer_number)) {
    out.push(`customer number is ${show(s.customer_number)}, expected it to contain ${show(expect.customer_number)}`);
  }
  if (has("pop_link")) {
    if (expect.pop_link === null) {
      if (s.pop_link !== null) out.push(`a pop link to ${show(s.pop_link)} is shown, expected none`);
    } else if (s.pop_link === null) {
      out.push(`no pop link is shown, expected one to ${show(expect.pop_link)}`);
    } else if (s.pop_link !== expect.pop_link && !sameUrl(s.pop_link_resolved, expect.pop_link)) {
      out.push(`the pop link goes to ${show(s.pop_link)}, expected ${show(expect.pop_link)}`);
    }
  }
  if (has("recent_calls_min") && s.recent_calls < expect.recent_calls_min) {
    out.push(`${s.recent_calls} recent calls listed, expected at least ${expect.recent_calls_min}`);
  }
  if (has("connection") && s.connection !== expect.connection) out.push(`body data-connection is ${show(s.connection)}, expected ${show(expect.connection)}`);
  if (has("agent_name") && s.agent_name !== expect.agent_name) out.push(`agent name is ${show(s.agent_name)}, expected ${show(expect.agent_name)}`);
  if (has("dial_result") && !(s.dial_result || "").includes(expect.dial_result)) {
    out.push(`dial result is ${show(s.dial_result)}, expected it to contain ${show(expect.dial_result)}`);
  }
  if (has("wrap_up_result") && !(s.wrap_up_result || "").includes(expect.wrap_up_result)) {
    out.push(`wrap-up result is ${show(s.wrap_up_result)}, expected it to contain ${show(expect.wrap_up_result)}`);
  }
  if (has("status") && s.status !== expect.status) out.push(`status select is ${show(s.status)}, expected ${show(expect.status)}`);
  return out;
}

async function waitForPanel(page, expect, deadline, what) {
  let last = [];
  for (;;) {
    const s = await page.evaluate(snapshot);
    last = mismatches(expect, s);
    if (last.length === 0) return s;
    checkPageErrors(what);
    if (Date.now() >= deadline) fail(`${what}: ${last.join("; ")}`);
    await sleep(POLL_MS);
  }
}

// Waits for a page opened at or after index `from` of openedPages to be at `url`.
async function waitForNewPage(from, url, deadline, what) {
  for (;;) {
    const fresh = openedPages.slice(from);
    const hit = fresh.find((p) => sameUrl(p.page.url(), url));
    if (hit) {
      await hit.page.close().catch(() => {});
      return;
    }
    if (Date.now() >= deadline) {
      if (fresh.length === 0) fail(`${what}: no new page opened, expected one at ${url}`);
      fail(`${what}: new pages opened at ${fresh.map((p) => show(p.page.url())).join(", ")}, expected ${url}`);
    }
    await sleep(POLL_MS);
  }
}

async function post(p, stepName, deadline) {
  const method = (p.method || "POST").toUpperCase();
  const body = p.body === undefined || p.body === null ? undefined : typeof p.body === "string" ? p.body : JSON.stringify(p.body);
  let response;
  try {
    response = await fetch(p.url, {
      method, headers: p.headers || {}, body,
      signal: AbortSignal.timeout(Math.max(1000, deadline - Date.now())),
    });
  } catch (e) {
    fail(`step ${show(stepName)}: ${method} ${p.url} failed: ${e.cause ? e.cause.message || e.cause : e.message}`);
  }
  const text = await response.text().catch(() => "");
  if (response.status < 200 || response.status > 299) {
    fail(`step ${show(stepName)}: ${method} ${p.url} answered ${response.status}: ${text.slice(0, 300)}`);
  }
}

async function checkSdkPage(crmPage, sdk, deadline, what) {
  let seen = [];
  for (;;) {
    const events = await crmPage.evaluate(() => (window.__desk_events || []).map((n) => ({
      type: n.type,
      names: ((n.contact && n.contact.candidates) || []).map((c) => c.name),
    })));
    const match = events.find((e) => e.type === sdk.expect_event
      && (sdk.expect_contact_name === undefined || sdk.expect_contact_name === null || e.names.includes(sdk.expect_contact_name)));
    if (match) return;
    seen = events;
    checkPageErrors(what);
    if (Date.now() >= deadline) {
      fail(`${what}: the SDK page recorded no ${show(sdk.expect_event)}`
        + (sdk.expect_contact_name ? ` with contact ${show(sdk.expect_contact_name)}` : "")
        + `; it has ${seen.length ? seen.map((e) => e.type + (e.names.length ? `(${e.names.join(", ")})` : "")).join(", ") : "nothing"}`);
    }
    await sleep(POLL_MS);
  }
}

async function main() {
  const planPath = process.argv[2];
  if (!planPath) fail("usage: node tests/browser/desk.cjs <plan.json>");
  let plan;
  try { plan = JSON.parse(fs.readFileSync(planPath, "utf8")); } catch (e) { fail(`cannot read the plan ${planPath}: ${e.message}`); }
  if (!plan.panel_url) fail("the plan has no panel_url");
  const steps = plan.steps || [];
  const sdk = plan.sdk_page || null;
  if (sdk && sdk.after_step !== undefined && sdk.after_step !== null && !steps.some((s) => s.name === sdk.after_step)) {
    fail(`sdk_page.after_step ${show(sdk.after_step)} names no step`);
  }
  if (!process.env.SB_PLAYWRIGHT) fail("SB_PLAYWRIGHT (the playwright-core package directory) is not set: source scripts/browser.sh and run ensure_browser_tools");
  let playwright;
  try { playwright = require(process.env.SB_PLAYWRIGHT); } catch (e) { fail(`cannot load playwright-core from ${process.env.SB_PLAYWRIGHT}: ${e.message}`); }

  // Never hang whatever happens: the steps' time plus a minute for the browser.
  const total = steps.reduce((sum, s) => sum + (s.timeout_ms || 10000), 0) + 60000;
  const watchdog = setTimeout(() => {
    process.stderr.write(`browser: FAILED: the whole run took longer than ${total} ms\n${logs.join("\n")}\n`);
    process.exit(1);
  }, total);
  watchdog.unref();

  const executablePath = process.env.SB_CHROMIUM || "/usr/bin/chromium";
  let browser;
  try {
    browser = await playwright.chromium.launch({ executablePath, headless: true, args: CHROMIUM_ARGS, timeout: 30000 });
  } catch (e) {
    fail(`cannot start ${executablePath}: ${e.message.split("\n")[0]}`);
  }
  const state = { browser, page: null, crmPage: null };
  try {
    await run(plan, steps, sdk, state);
  } catch (e) {
    await screenshots(plan, state);
    await browser.close().catch(() => {});
    throw e;
  }
  await screenshots(plan, state);
  await browser.close().catch(() => {});
  clearTimeout(watchdog);
  console.log(`browser: ${steps.length} steps passed`);
}

async function screenshots(plan, state) {
  if (plan.screenshot_path && state.page) {
    await state.page.screenshot({ path: plan.screenshot_path, fullPage: true, timeout: 10000 })
      .catch((e) => logs.push(`[driver] screenshot failed: ${e.message}`));
  }
}

async function run(plan, steps, sdk, state) {
  const context = await state.browser.newContext({ viewport: { width: 480, height: 720 } });
  const page = state.page = await context.newPage();
  watch(page, "panel", true);
  let openingOwn = false;
  context.on("page", (p) => {
    if (openingOwn) return;
    openedPages.push({ page: p, at: Date.now() });
    watch(p, "popup", false);
  });

  let deadline = Date.now() + 20000;
  const response = await page.goto(plan.panel_url, { waitUntil: "domcontentloaded", timeout: 20000 })
    .catch((e) => fail(`cannot load the panel ${plan.panel_url}: ${e.message.split("\n")[0]}`));
  if (response && !response.ok()) fail(`the panel ${plan.panel_url} answered ${response.status()}`);
  await waitForPanel(page, { connection: "open" }, deadline, "the panel did not connect");
  if (plan.expect_dial_prefill !== undefined && plan.expect_dial_prefill !== null) {
    const value = await page.inputValue('[data-testid="dial-input"]');
    if (value !== plan.expect_dial_prefill) fail(`the dial box holds ${show(value)}, expected ${show(plan.expect_dial_prefill)} (from fiche_num)`);
  }

  if (sdk) {
    openingOwn = true; // this page is ours, not a screen-pop
    const crmPage = state.crmPage = await context.newPage();
    openingOwn = false;
    watch(crmPage, "sdk-page", true);
    deadline = Date.now() + 20000;
    await crmPage.goto(sdk.url, { waitUntil: "domcontentloaded", timeout: 20000 })
      .catch((e) => fail(`cannot load the SDK page ${sdk.url}: ${e.message.split("\n")[0]}`));
    await crmPage.waitForFunction(() => document.body && document.body.getAttribute("data-connection") === "open", null,
      { timeout: Math.max(1, deadline - Date.now()), polling: POLL_MS })
      .catch(async () => {
        const c = await crmPage.evaluate(() => document.body && document.body.getAttribute("data-connection")).catch(() => "?");
        fail(`the SDK page did not connect (data-connection ${show(c)})`);
      });
  }
  checkPageErrors("on load");

  let sdkChecked = false;
  for (const [i, step] of steps.entries()) {
    const name = step.name || `#${i + 1}`;
    const what = `step ${show(name)}`;
    deadline = Date.now() + (step.timeout_ms || 10000);
    const expect = step.expect || {};
    const pagesBefore = openedPages.length;

    const posts = step.post === undefined || step.post === null ? [] : Array.isArray(step.post) ? step.post : [step.post];
    for (const p of posts) await post(p, name, deadline);
    for (const [id, value] of Object.entries(step.fill || {})) {
      await page.fill(`[data-testid="${id}"]`, value, { timeout: Math.max(1, deadline - Date.now()) });
    }
    for (const [id, value] of Object.entries(step.select || {})) {
      const selector = `[data-testid="${id}"] option[value="${value}"]`;
      await page.waitForSelector(selector, { state: "attached", timeout: Math.max(1, deadline - Date.now()) })
        .catch(() => fail(`${what}: no option ${show(value)} in ${id}`));
      await page.selectOption(`[data-testid="${id}"]`, value, { timeout: Math.max(1, deadline - Date.now()) });
    }
    if (step.select_status) await page.selectOption('[data-testid="status-select"]', step.select_status, { timeout: Math.max(1, deadline - Date.now()) });
    if (step.click) await page.click(`[data-testid="${step.click}"]`, { timeout: Math.max(1, deadline - Date.now()) });

    await waitForPanel(page, expect, deadline, what);
    if (typeof expect.popup_url === "string") {
      await waitForNewPage(pagesBefore, expect.popup_url, deadline, `${what} (screen-pop)`);
    } else if (expect.popup_url === null) {
      await sleep(NO_POPUP_GRACE_MS);
      const fresh = openedPages.slice(pagesBefore);
      if (fresh.length) fail(`${what}: a page opened at ${fresh[0].page.url()}, expected no screen-pop window`);
    }
    if (typeof expect.pop_link === "string") {
      const beforeClick = openedPages.length;
      await page.click('[data-testid="pop-link"]', { timeout: Math.max(1, deadline - Date.now()) });
      await waitForNewPage(beforeClick, expect.pop_link, Math.max(deadline, Date.now() + 5000), `${what} (clicked pop link)`);
    }
    if (sdk && state.crmPage && sdk.after_step === step.name) {
      await checkSdkPage(state.crmPage, sdk, deadline, `${what} (SDK page)`);
      sdkChecked = true;
    }
    checkPageErrors(`in ${what}`);
  }
  if (sdk && state.crmPage && !sdkChecked) {
    await checkSdkPage(state.crmPage, sdk, Date.now() + 10000, "after the steps (SDK page)");
  }
  checkPageErrors("at the end");
}

main().catch((e) => {
  const reason = e instanceof Failure ? e.message : `driver error: ${e.stack || e.message}`;
  process.stderr.write(`browser: FAILED: ${reason.split("\n").join("\n    ")}\n`);
  if (logs.length) process.stderr.write(`console of the pages:\n  ${logs.join("\n  ")}\n`);
  process.exit(1);
});
