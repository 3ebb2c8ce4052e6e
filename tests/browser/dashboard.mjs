// Opens the dashboard in headless Chromium, produces one message to Kafka, and waits for that
// customer's total to change on the page without a reload. Run by tests/browser.rs:
//
//   node dashboard.mjs URL CUSTOMER EXPECTED SCREENSHOT -- PRODUCE_COMMAND...
//
// Exits non-zero (with the reason) when the page does not show EXPECTED for CUSTOMER in time.
import { execFileSync } from "node:child_process";
import { chromium } from "playwright-core";

const [url, customer, expected, screenshot, sep, ...produce] = process.argv.slice(2);
if (!url || sep !== "--" || produce.length === 0) {
  console.error("usage: node dashboard.mjs URL CUSTOMER EXPECTED SCREENSHOT -- PRODUCE_COMMAND...");
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 640 } });
  const external = [];
  page.on("request", (r) => { if (!r.url().startsWith(url.replace(/\/$/, ""))) external.push(r.url()); });
  await page.goto(url);
  const row = `tr[data-key="${customer}"]`;
  await page.waitForSelector(row, { timeout: 30000 });
  const before = await page.textContent(`${row} td:nth-child(2)`);
  // The table is live: no reload from here on.
  await page.evaluate(() => { window.__loaded = performance.timeOrigin; });
  execFileSync(produce[0], produce.slice(1), { stdio: "inherit" });
  await page.waitForFunction(
    ([sel, want]) => document.querySelector(sel)?.children[1]?.textContent.replace(/[^0-9.-]/g, "") === want,
    [row, expected],
    { timeout: 30000 },
  );
  const same = await page.evaluate(() => window.__loaded === performance.timeOrigin);
  if (!same) throw new Error("the page reloaded");
  if (external.length) throw new Error("the dashboard loaded from outside: " + external.join(", "));
  // Let the status panel and chart fill in before the picture.
  await page.waitForTimeout(2500);
  await page.screenshot({ path: screenshot });
  console.log(`${customer}: ${before} -> ${expected} without a reload`);
} finally {
  await browser.close();
}
