/**
 * The bench's SVG line-chart writer: a well-formed SVG document whose polylines carry exactly the
 * series and points given, in plot coordinates that respect the axes; round ticks; escaping.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { escapeXml, lineChartSvg, niceTicks, SERIES_COLOURS, tickFormatter } from '../../bench/_plot.js';

/** Tag names in document order, checking that every element closes in order (a minimal XML well-formedness check). */
function checkWellFormed(svg: string): string[] {
  const stack: string[] = [];
  const seen: string[] = [];
  for (const m of svg.matchAll(/<(\/?)([a-zA-Z][\w-]*)([^>]*?)(\/?)>/g)) {
    const [, closing, name, attrs, selfClosing] = m;
    if (name === undefined) continue;
    // attribute values must be quoted and free of raw < and &
    for (const a of (attrs ?? '').matchAll(/\s([\w:-]+)=("([^"]*)"|[^\s"]+)/g)) {
      assert.ok(a[2]?.startsWith('"'), `unquoted attribute ${a[1]} in <${name}>`);
      assert.doesNotMatch(a[3] ?? '', /[<]|&(?!#\d+;|amp;|lt;|gt;|quot;)/, `raw markup in ${a[1]}`);
    }
    if (closing === '/') {
      assert.equal(stack.pop(), name, `</${name}> closes the wrong element`);
    } else {
      seen.push(name);
      if (selfClosing !== '/') stack.push(name);
    }
  }
  assert.deepEqual(stack, [], 'unclosed elements');
  // text between tags holds no raw < or stray &
  for (const text of svg.split(/<[^>]*>/)) assert.doesNotMatch(text, /[<>]|&(?!#\d+;)/);
  return seen;
}

interface Polyline {
  readonly name: string;
  readonly stroke: string;
  readonly points: [number, number][];
}

function polylines(svg: string): Polyline[] {
  return [...svg.matchAll(/<polyline class="series" data-name="([^"]*)" fill="none" stroke="([^"]*)" stroke-width="2" points="([^"]*)"\/>/g)].map((m) => ({
    name: m[1] ?? '',
    stroke: m[2] ?? '',
    points: (m[3] ?? '')
      .split(' ')
      .filter((p) => p !== '')
      .map((p) => p.split(',').map(Number) as [number, number]),
  }));
}

describe('lineChartSvg', () => {
  const chart = {
    title: 'Kernel memory <modeled> & measured',
    xLabel: 'time (s)',
    yLabel: 'KiB',
    series: [
      { name: 'no collector', points: [[0, 0], [10, 2000], [20, 4000]] as const },
      { name: 'flavour "n"', points: [[0, 0], [10, 700], [20, 650], [30, 640]] as const },
      { name: 'staged', points: [[0, 8], [5, 100]] as const },
    ],
    note: 'AMD EPYC, 2 cores',
  };
  const svg = lineChartSvg(chart);

  it('is a well-formed SVG document with the SVG namespace and a viewBox', () => {
    const tags = checkWellFormed(svg);
    assert.equal(tags[0], 'svg');
    assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg" version="1\.1" width="720" height="\d+" viewBox="0 0 720 \d+"/);
    assert.equal(svg.trimEnd().endsWith('</svg>'), true);
  });

  it('draws one polyline per series, in order, with its own colour and every point', () => {
    const lines = polylines(svg);
    assert.deepEqual(lines.map((l) => l.name), ['no collector', 'flavour &#34;n&#34;', 'staged']);
    assert.deepEqual(lines.map((l) => l.stroke), SERIES_COLOURS.slice(0, 3));
    assert.deepEqual(lines.map((l) => l.points.length), [3, 4, 2]);
  });

  it('maps data to plot coordinates: x grows right, y grows up, the axes hold every point', () => {
    const [none, n] = polylines(svg);
    assert.ok(none !== undefined && n !== undefined);
    const xs = none.points.map(([x]) => x);
    const ys = none.points.map(([, y]) => y);
    assert.ok((xs[0] ?? 0) < (xs[1] ?? 0) && (xs[1] ?? 0) < (xs[2] ?? 0));
    assert.ok((ys[0] ?? 0) > (ys[1] ?? 0) && (ys[1] ?? 0) > (ys[2] ?? 0), 'larger y is higher on the page (smaller SVG y)');
    // equal x steps give equal pixel steps
    assert.ok(Math.abs((xs[1] ?? 0) - (xs[0] ?? 0) - ((xs[2] ?? 0) - (xs[1] ?? 0))) < 0.2);
    // the same y in two series is the same pixel row: 0 at t=0 in both
    assert.equal(none.points[0]?.[1], n.points[0]?.[1]);
    // every point lies inside the axes box (left margin 72, top 40)
    for (const [x, y] of polylines(svg).flatMap((l) => l.points)) {
      assert.ok(x >= 72 && x <= 720 - 16, `x ${x}`);
      assert.ok(y >= 48 && y <= 400, `y ${y}`);
    }
  });

  it('labels the axes with round ticks covering the data, and escapes text', () => {
    const ticks = /<g class="ticks" fill="#333333">([\s\S]*?)<\/g>/.exec(svg)?.[1] ?? '';
    const xTicks = [...ticks.matchAll(/<text x="[\d.]+" y="[\d.]+" text-anchor="middle">([^<]*)<\/text>/g)].map((m) => m[1]);
    assert.deepEqual(xTicks, ['0', '5', '10', '15', '20', '25', '30']);
    const yTicks = [...svg.matchAll(/<text x="64" y="[\d.]+" text-anchor="end">([^<]*)<\/text>/g)].map((m) => m[1]);
    assert.deepEqual(yTicks, ['0', '1000', '2000', '3000', '4000']);
    assert.match(svg, /Kernel memory &#60;modeled&#62; &#38; measured/);
    assert.match(svg, />AMD EPYC, 2 cores</);
  });

  it('puts every series in the legend, below the plot', () => {
    const legend = /<g class="legend">([\s\S]*?)<\/g>/.exec(svg)?.[1] ?? '';
    assert.deepEqual([...legend.matchAll(/<text[^>]*>([^<]*)<\/text>/g)].map((m) => m[1]), ['no collector', 'flavour &#34;n&#34;', 'staged']);
    for (const m of legend.matchAll(/<text x="[\d.]+" y="([\d.]+)"/g)) assert.ok(Number(m[1]) > 400 - 56, 'legend under the x axis');
  });

  it('draws an empty chart (no points) with default axes instead of failing', () => {
    const empty = lineChartSvg({ title: 't', xLabel: 'x', yLabel: 'y', series: [{ name: 'nothing yet', points: [] }] });
    checkWellFormed(empty);
    assert.deepEqual(polylines(empty).map((l) => l.points.length), [0]);
  });

  it('skips non-finite points (a sample that could not be read)', () => {
    const svg2 = lineChartSvg({ title: 't', xLabel: 'x', yLabel: 'y', series: [{ name: 's', points: [[0, 1], [1, Number.NaN], [2, 3]] }] });
    assert.equal(polylines(svg2)[0]?.points.length, 2);
  });
});

describe('niceTicks', () => {
  it('covers the range with steps of 1, 2 or 5 × 10^k', () => {
    assert.deepEqual(niceTicks(0, 4000), [0, 1000, 2000, 3000, 4000]);
    assert.deepEqual(niceTicks(0, 27.3), [0, 5, 10, 15, 20, 25, 30]);
    assert.deepEqual(niceTicks(0.1, 0.93), [0, 0.2, 0.4, 0.6, 0.8, 1]);
    assert.deepEqual(niceTicks(-3, 7), [-4, -2, 0, 2, 4, 6, 8]);
  });

  it('widens a single value into a range and rejects infinite bounds', () => {
    const t = niceTicks(5, 5);
    assert.ok((t[0] ?? 99) <= 5 && (t[t.length - 1] ?? -99) >= 5 && t.length >= 2);
    assert.throws(() => niceTicks(0, Number.POSITIVE_INFINITY), RangeError);
  });
});

describe('tickFormatter and escapeXml', () => {
  it('labels one axis in one unit, chosen by its largest tick', () => {
    assert.deepEqual([0, 5000, 10000, 15000].map(tickFormatter([0, 5000, 10000, 15000])), ['0', '5k', '10k', '15k']);
    assert.deepEqual([0, 1000, 2000].map(tickFormatter([0, 1000, 2000])), ['0', '1000', '2000']);
    assert.deepEqual([0, 0.25, 0.5].map(tickFormatter([0, 0.25, 0.5])), ['0', '0.25', '0.5']);
    assert.deepEqual([1e6, 2.5e6].map(tickFormatter([0, 2.5e6])), ['1M', '2.5M']);
    assert.deepEqual([3e9].map(tickFormatter([0, 3e9])), ['3G']);
  });

  it('escapes the five XML specials as numeric references', () => {
    assert.equal(escapeXml(`<a href="x">&'`), '&#60;a href=&#34;x&#34;&#62;&#38;&#39;');
  });
});
