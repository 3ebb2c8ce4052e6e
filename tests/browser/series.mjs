// Opens the dashboard of a windowed view in headless Chromium and prints, as JSON, the time
// series it draws: each bar's window start and state. Run by tests/browser.rs:
//
//   node series.mjs URL MIN_BARS
//
// Exits non-zero (with the reason) when fewer than MIN_BARS bars appear in time.
import { chromium } from "playwright-core";

const [url, minBars] = process.argv.slice(2);
if (!url || !minBars) {
  console.error("usage: node series.mjs URL MIN_BARS");
  process.exit(2);
}
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 720 } });
  await page.goto(url);
  await page.waitForFunction(
    ([n]) => document.querySelectorAll("svg#series rect").length >= n &&
      [...document.querySelectorAll("svg#series rect")].some((r) => r.dataset.state === "exact"),
    [Number(minBars)],
    { timeout: 30000 },
  );
  const bars = await page.$$eval("svg#series rect", (rs) => rs.map((r) => ({ start: r.dataset.start, state: r.dataset.state })));
  console.log(JSON.stringify(bars));
} finally {
  await browser.close();
}
