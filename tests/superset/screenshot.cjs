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

// What a reader of the Markets dashboard sees, in page pixels (runs in the page).
function readMarkets() {
  const box = (el) => { const r = el.getBoundingClientRect(); return { left: r.left, right: r.right, top: r.top, bottom: r.bottom, width: r.width, height: r.height }; };
  const centre = (el) => { const r = el.getBoundingClientRect(); return Math.round((r.left + r.width / 2) * 10) / 10; };
  const titled = (svg) => (svg ? [...svg.querySelectorAll('rect')].filter((r) => r.querySelector('title')) : []);
  const price = document.querySelector('svg[viewBox="0 0 960 330"]');
  const volume = document.querySelector('svg[viewBox="0 0 960 150"]');
  const bodies = titled(price);
  const bars = titled(volume);
  const texts = (svg) => (svg ? [...svg.querySelectorAll('text')].map((t) => t.textContent) : []);
  // The part of an element a reader can see: its box clipped by every scrolling/clipping
  // ancestor and by the viewport.
  const visible = (el) => {
    let { left, right, top, bottom } = box(el);
    for (let a = el.parentElement; a; a = a.parentElement) {
      const s = getComputedStyle(a);
      if (s.overflowX !== 'visible' || s.overflowY !== 'visible') {
        const r = a.getBoundingClientRect();
        left = Math.max(left, r.left); right = Math.min(right, r.right);
        top = Math.max(top, r.top); bottom = Math.min(bottom, r.bottom);
      }
    }
    right = Math.min(right, window.innerWidth); bottom = Math.min(bottom, window.innerHeight);
    return { left, right, top, bottom, width: right - left, height: bottom - top };
  };
  const headers = [...document.querySelectorAll('table thead th')].filter((th) => th.getBoundingClientRect().height > 0);
  const names = headers.map((th) => th.textContent.trim());
  const changeCol = names.findIndex((n) => /24 h change/.test(n));
  const changeCells = changeCol < 0 ? [] : [...document.querySelectorAll('table tbody tr')]
    .map((tr) => tr.children[changeCol]).filter(Boolean).map((td) => td.textContent.trim());
  const filters = [...document.querySelectorAll('[data-test="filter-bar"], [data-test="dashboard-filters-panel"]')];
  const filterRoot = filters[0] || document.body;
  const filterText = filterRoot.innerText;
  const selected = [...filterRoot.querySelectorAll('.ant-select-selection-item')].map((e) => e.textContent.trim());
  return {
    candles: bodies.length,
    candle_x: bodies.map(centre),
    // Per candle: the whole bar (taker sells' colour) then the taker buys over its bottom.
    volume_bars: bars.filter((_, i) => i % 2 === 0).map((r) => ({ x: centre(r), h: box(r).height, fill: r.getAttribute('fill') })),
    buy_bars: bars.filter((_, i) => i % 2 === 1).map((r) => ({ x: centre(r), h: box(r).height, fill: r.getAttribute('fill') })),
    price_texts: texts(price),
    volume_texts: texts(volume),
    table_headers: names,
    last_header: headers.length ? box(headers[headers.length - 1]) : null,
    last_header_visible: headers.length ? visible(headers[headers.length - 1]) : null,
    change_cells: changeCells,
    filter_text: filterText,
    filter_selected: selected,
  };
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
    // The native filters each chart query carried (extra_form_data), by chart: what the
    // charts were really drawn with, whatever the filter bar shows.
    const chartFilters = {};
    page.on('request', (req) => {
      if (req.method() !== 'POST' || !/\/api\/v1\/chart\/data/.test(req.url())) return;
      try {
        const form = JSON.parse(req.postData() || '{}').form_data || {};
        chartFilters[form.slice_id] = (form.extra_form_data || {}).filters || [];
      } catch (err) { /* not JSON: not a chart query */ }
    });
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
    const markets = process.env.DASHBOARD === 'candlestack-markets' ? await page.evaluate(readMarkets) : {};
    await page.screenshot({ path: process.env.OUT, fullPage: false });
    console.log(JSON.stringify({ ...drawn, markets, chart_filters: chartFilters, errors }));
  } finally {
    await browser.close();
  }
}

main().catch((err) => { console.error(err); process.exit(1); });
