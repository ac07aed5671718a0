// Opens frugal's status page in Debian's headless Chromium and reports what a person's
// browser would meet, as one JSON line on stdout (tests/e2e/test_status_page.py judges it):
//   console_errors  errors on the console or uncaught in the page
//   foreign         requests to any origin but the admin port's
//   compared        per signal, the chart's points (data-t, data-used) against the history
//                   document the page itself was served (null when they differ: mismatch)
//   live_ms         how long after `PUT /api/v1/usage/<signal>` the chart showed the new
//                   figure (null when it did not within the deadline)
// Usage: node status_page.mjs ADMIN_URL SCREENSHOT SIGNAL NEW_USED
import { chromium } from "playwright-core";

const [admin, screenshot, signal, newUsed] = process.argv.slice(2);
const origin = new URL(admin).origin;
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function until(what, deadlineMs, probe) {
  const end = Date.now() + deadlineMs;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

const report = { console_errors: [], foreign: [], compared: {}, mismatch: null, live_ms: null };
const browser = await chromium.launch({ executablePath, args: ["--no-sandbox"] });
try {
  const page = await browser.newPage({ viewport: { width: 1360, height: 1000 } });
  page.on("console", (m) => { if (m.type() === "error") report.console_errors.push(m.text()); });
  page.on("pageerror", (e) => report.console_errors.push(String(e)));
  page.on("request", (r) => {
    const u = new URL(r.url());
    if (u.protocol !== "data:" && u.origin !== origin) report.foreign.push(r.url());
  });
  // Every history document the page was served, to compare what it drew with each.
  const served = [];
  page.on("response", async (r) => {
    if (new URL(r.url()).pathname === "/api/v1/usage/history" && r.ok()) {
      served.push(await r.json());
    }
  });
  await page.goto(`${admin}/`, { waitUntil: "load" });

  const snapshot = () => page.evaluate(() => {
    const out = { renders: Number(document.body.dataset.renders || 0), now: null, signals: {} };
    for (const svg of document.querySelectorAll("svg[data-signal]")) {
      out.now = Number(svg.dataset.now);
      out.signals[svg.dataset.signal] = [...svg.querySelectorAll("circle.pt")].map((c) => ({
        t: Number(c.dataset.t), used: Number(c.dataset.used),
      }));
    }
    return out;
  });

  // The chart against the document it was drawn from (the last one served with its `now`).
  const snap = await until("a rendered chart and its document", 10000, async () => {
    const s = await snapshot();
    return s.renders > 0 && served.some((d) => d.now === s.now) ? s : null;
  });
  const doc = served.filter((d) => d.now === snap.now).at(-1);
  for (const [name, sig] of Object.entries(doc.signals)) {
    const drawn = JSON.stringify(snap.signals[name]);
    const given = JSON.stringify(sig.points.map((p) => ({ t: p.t, used: p.used })));
    report.compared[name] = drawn === given ? sig.points.length : null;
    if (drawn !== given && !report.mismatch) report.mismatch = { name, drawn, given };
  }

  // A change of usage shows without reloading.
  const put = await fetch(`${admin}/api/v1/usage/${signal}`, {
    method: "PUT",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ used: Number(newUsed) }),
  });
  if (!put.ok) throw new Error(`PUT answered ${put.status}: ${await put.text()}`);
  const changed = Date.now();
  try {
    await until("the new usage on the chart", 8000, async () => {
      const s = await snapshot();
      const pts = s.signals[signal] || [];
      return pts.length > 0 && pts.at(-1).used === Number(newUsed);
    });
    report.live_ms = Date.now() - changed;
  } catch (e) {
    report.live_ms = null;
  }
  report.renders = (await snapshot()).renders;
  await page.screenshot({ path: screenshot, fullPage: true });
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));
