/**
 * A small, dependency-free SVG line chart: axes with round ticks, a legend, several series. Enough
 * for the bench plots in bench/results/ (viewed on GitHub, where SVG renders inline); pure: returns
 * the document as a string.
 */

/** One line of the chart. Points are drawn in the order given (x need not be sorted). */
export interface ChartSeries {
  readonly name: string;
  readonly points: readonly (readonly [x: number, y: number])[];
}

/** What {@link lineChartSvg} draws. */
export interface LineChart {
  readonly title: string;
  /** A smaller line under the title (what was run). */
  readonly subtitle?: string;
  /** Axis labels, units included, e.g. `time (s)`. */
  readonly xLabel: string;
  readonly yLabel: string;
  readonly series: readonly ChartSeries[];
  /** Pixels; default 720 × 400, plus a row per legend line and one for the note. */
  readonly width?: number;
  readonly height?: number;
  /** The y axis starts at 0 unless false (memory and counts are read against zero). */
  readonly yFromZero?: boolean;
  /** A line of small print under the plot, e.g. the machine. */
  readonly note?: string;
}

/** Colour-blind-safe palette (Okabe & Ito 2008), in series order, cycled. */
export const SERIES_COLOURS = ['#0072B2', '#D55E00', '#009E73', '#CC79A7', '#E69F00', '#56B4E9', '#000000', '#F0E442'] as const;

const MARGIN = { left: 72, right: 16, top: 48, bottom: 56 } as const;
/** Legend rows sit under the x axis label, so they never hide a line. */
const LEGEND_ROW = 18;
/** Rough width of a 12 px sans-serif character, to lay legend entries out in rows. */
const CHAR_PX = 7;

interface LegendEntry {
  readonly name: string;
  readonly colour: string;
  readonly x: number;
  readonly row: number;
}

/** Legend entries placed left to right, wrapping to a new row at `width`. */
function layoutLegend(names: readonly string[], width: number): LegendEntry[] {
  const entries: LegendEntry[] = [];
  let x = MARGIN.left;
  let row = 0;
  names.forEach((name, i) => {
    const w = 30 + name.length * CHAR_PX;
    if (x + w > width - MARGIN.right && x > MARGIN.left) {
      row++;
      x = MARGIN.left;
    }
    entries.push({ name, colour: SERIES_COLOURS[i % SERIES_COLOURS.length] ?? '#000000', x, row });
    x += w + 12;
  });
  return entries;
}

/** `text` safe inside an XML element or a double-quoted attribute. */
export function escapeXml(text: string): string {
  return text.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/**
 * Round tick values covering [min, max]: steps of 1, 2 or 5 × 10^k, about `target` of them
 * (Heckbert, "Nice numbers for graph labels", Graphics Gems 1990). The first tick is ≤ min and
 * the last ≥ max, so the axis range is [ticks[0], ticks[last]].
 */
export function niceTicks(min: number, max: number, target = 5): number[] {
  if (!Number.isFinite(min) || !Number.isFinite(max)) throw new RangeError(`niceTicks: bounds must be finite (got ${min}, ${max})`);
  if (max < min) [min, max] = [max, min];
  if (max === min) {
    const pad = min === 0 ? 1 : Math.abs(min) / 2;
    return niceTicks(min - pad, max + pad, target);
  }
  const rough = (max - min) / Math.max(1, target);
  const magnitude = 10 ** Math.floor(Math.log10(rough));
  const f = rough / magnitude;
  const step = (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * magnitude;
  const first = Math.floor(min / step);
  const last = Math.ceil(max / step);
  const ticks: number[] = [];
  // Multiplying (not accumulating) keeps 0.1 + 0.2 noise out of the labels.
  for (let i = first; i <= last; i++) ticks.push(Number((i * step).toPrecision(12)));
  return ticks;
}

/**
 * Labels for the ticks of one axis, all in one unit chosen by the largest: 0, 5k, 10k, 15k (not
 * 0, 5000, 10k); 0.25 stays 0.25.
 */
export function tickFormatter(ticks: readonly number[]): (value: number) => string {
  const largest = Math.max(0, ...ticks.map(Math.abs));
  const [divisor, suffix] = largest >= 1e9 ? [1e9, 'G'] : largest >= 1e6 ? [1e6, 'M'] : largest >= 1e4 ? [1e3, 'k'] : [1, ''];
  return (value) => `${Number((value / divisor).toPrecision(4))}${value === 0 ? '' : suffix}`;
}

const px = (v: number): string => v.toFixed(1);

/** The chart as a standalone SVG 1.1 document. */
export function lineChartSvg(chart: LineChart): string {
  const width = chart.width ?? 720;
  const legend = layoutLegend(chart.series.map((s) => s.name), width);
  const legendRows = legend.reduce((rows, e) => Math.max(rows, e.row + 1), 0);
  const noteH = chart.note === undefined ? 0 : 16;
  const height = (chart.height ?? 400) + legendRows * LEGEND_ROW + noteH;
  const plotW = width - MARGIN.left - MARGIN.right;
  const plotH = height - MARGIN.top - MARGIN.bottom - legendRows * LEGEND_ROW - noteH;
  const all = chart.series.flatMap((s) => s.points).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  const xs = all.map(([x]) => x);
  const ys = all.map(([, y]) => y);
  const xTicks = niceTicks(xs.length > 0 ? Math.min(...xs) : 0, xs.length > 0 ? Math.max(...xs) : 1);
  const yLow = chart.yFromZero === false && ys.length > 0 ? Math.min(...ys) : Math.min(0, ...ys);
  const yTicks = niceTicks(yLow, ys.length > 0 ? Math.max(...ys) : 1);
  const [x0, x1] = [xTicks[0] ?? 0, xTicks[xTicks.length - 1] ?? 1];
  const [y0, y1] = [yTicks[0] ?? 0, yTicks[yTicks.length - 1] ?? 1];
  const sx = (x: number) => MARGIN.left + ((x - x0) / (x1 - x0)) * plotW;
  const sy = (y: number) => MARGIN.top + plotH - ((y - y0) / (y1 - y0)) * plotH;

  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="${width / 2}" y="20" text-anchor="middle" font-size="15" font-weight="bold">${escapeXml(chart.title)}</text>`,
  ];
  if (chart.subtitle !== undefined) out.push(`<text x="${width / 2}" y="35" text-anchor="middle" font-size="11" fill="#444444">${escapeXml(chart.subtitle)}</text>`);
  const bottom = MARGIN.top + plotH;
  out.push('<g class="grid" stroke="#e0e0e0" stroke-width="1">');
  for (const t of yTicks) out.push(`<line x1="${MARGIN.left}" y1="${px(sy(t))}" x2="${MARGIN.left + plotW}" y2="${px(sy(t))}"/>`);
  out.push('</g>');
  out.push('<g class="axes" stroke="#333333" stroke-width="1">');
  out.push(`<line x1="${MARGIN.left}" y1="${bottom}" x2="${MARGIN.left + plotW}" y2="${bottom}"/>`);
  out.push(`<line x1="${MARGIN.left}" y1="${MARGIN.top}" x2="${MARGIN.left}" y2="${bottom}"/>`);
  for (const t of xTicks) out.push(`<line x1="${px(sx(t))}" y1="${bottom}" x2="${px(sx(t))}" y2="${bottom + 5}"/>`);
  for (const t of yTicks) out.push(`<line x1="${MARGIN.left - 5}" y1="${px(sy(t))}" x2="${MARGIN.left}" y2="${px(sy(t))}"/>`);
  out.push('</g>');
  const xLabelOf = tickFormatter(xTicks);
  const yLabelOf = tickFormatter(yTicks);
  out.push('<g class="ticks" fill="#333333">');
  for (const t of xTicks) out.push(`<text x="${px(sx(t))}" y="${bottom + 18}" text-anchor="middle">${xLabelOf(t)}</text>`);
  for (const t of yTicks) out.push(`<text x="${MARGIN.left - 8}" y="${px(sy(t) + 4)}" text-anchor="end">${yLabelOf(t)}</text>`);
  out.push('</g>');
  out.push(`<text x="${MARGIN.left + plotW / 2}" y="${bottom + 38}" text-anchor="middle">${escapeXml(chart.xLabel)}</text>`);
  out.push(`<text x="16" y="${MARGIN.top + plotH / 2}" text-anchor="middle" transform="rotate(-90 16 ${MARGIN.top + plotH / 2})">${escapeXml(chart.yLabel)}</text>`);
  if (chart.note !== undefined) out.push(`<text x="${MARGIN.left}" y="${height - 6}" font-size="10" fill="#666666">${escapeXml(chart.note)}</text>`);

  chart.series.forEach((s, i) => {
    const colour = legend[i]?.colour ?? '#000000';
    const points = s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y)).map(([x, y]) => `${px(sx(x))},${px(sy(y))}`);
    out.push(`<polyline class="series" data-name="${escapeXml(s.name)}" fill="none" stroke="${colour}" stroke-width="2" points="${points.join(' ')}"/>`);
  });
  out.push('<g class="legend">');
  for (const e of legend) {
    const y = bottom + MARGIN.bottom + 12 + e.row * LEGEND_ROW;
    out.push(`<line x1="${e.x}" y1="${y - 4}" x2="${e.x + 22}" y2="${y - 4}" stroke="${e.colour}" stroke-width="3"/>`);
    out.push(`<text x="${e.x + 28}" y="${y}">${escapeXml(e.name)}</text>`);
  }
  out.push('</g>');
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
