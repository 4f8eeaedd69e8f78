// Logs in to Superset with headless Chromium and screenshots one dashboard.
// Env: CHROMIUM, SUPERSET_URL, SUPERSET_USER, SUPERSET_PASSWORD, DASHBOARD (slug), OUT (png).
// Needs playwright-core on NODE_PATH. Prints one JSON line: what the page drew.
'use strict';
const { chromium } = require('playwright-core');

// If a wait below times out, say where the page was and keep what it showed. (The login wait
// used to time out about 1 run in 3: superset_config.py's FLASK_APP_MUTATOR explains why.)
async function explain(page, errors, what, err) {
  const shot = `${process.env.OUT}.failed.png`;
  await page.screenshot({ path: shot, fullPage: false }).catch(() => {});
  console.error(`${what} after 60 s at ${page.url()} (title ${JSON.stringify(await page.title())}); `
    + `screenshot ${shot}; page errors: ${JSON.stringify(errors)}`);
  throw err;
}

async function main() {
  const base = process.env.SUPERSET_URL;
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  const errors = [];
  try {
    const page = await browser.newPage({ viewport: { width: 1600, height: 1400 } });
    page.on('pageerror', (err) => errors.push(String(err)));
    page.on('console', (msg) => {
      // CSP violations show up as console errors: that is exactly what must not happen.
      // Superset's telemetry pixel (scarf.sh) is blocked on purpose by img-src.
      if (msg.type() === 'error' && /Content Security Policy|unsafe-eval/i.test(msg.text())
          && !/scarf\.sh/.test(msg.text())) {
        errors.push(msg.text());
      }
    });
    await page.goto(`${base}/login/`, { waitUntil: 'domcontentloaded' });
    await page.waitForSelector('input[type="password"]', { timeout: 60000 });
    await page.fill('input[name="username"], input#username', process.env.SUPERSET_USER);
    await page.fill('input[type="password"]', process.env.SUPERSET_PASSWORD);
    await Promise.all([
      page.waitForURL((url) => !url.pathname.startsWith('/login'), { timeout: 60000 })
        .catch((err) => explain(page, errors, 'still on the login page', err)),
      page.keyboard.press('Enter'),
    ]);
    // Not 'networkidle': the dashboards refresh themselves, the network is never idle for long.
    await page.goto(`${base}/superset/dashboard/${process.env.DASHBOARD}/`,
      { waitUntil: 'domcontentloaded', timeout: 90000 });
    await page.waitForSelector('.dashboard-chart, .chart-container', { timeout: 60000 })
      .catch((err) => explain(page, errors, 'no chart', err));
    // The candlestick is the Handlebars chart's SVG: wait until its candles are drawn.
    if (process.env.DASHBOARD === 'candlestack-markets') {
      await page.waitForFunction(() => document.querySelectorAll('svg rect').length >= 60,
        null, { timeout: 60000 }).catch(() => {});
    }
    // Wait until no chart shows its loading spinner, then let ECharts animations settle.
    await page.waitForTimeout(1000);
    await page.waitForFunction(() => document.querySelectorAll('.loading').length === 0,
      null, { timeout: 60000 }).catch(() => {});
    await page.waitForTimeout(2000);
    const drawn = await page.evaluate(() => ({
      svg_rects: document.querySelectorAll('svg rect').length,
      svg_lines: document.querySelectorAll('svg line').length,
      svg_texts: document.querySelectorAll('svg text').length,
      canvases: document.querySelectorAll('canvas').length,
      title: document.title,
    }));
    await page.screenshot({ path: process.env.OUT, fullPage: false });
    console.log(JSON.stringify({ ...drawn, errors }));
  } finally {
    await browser.close();
  }
}

main().catch((err) => { console.error(err); process.exit(1); });
