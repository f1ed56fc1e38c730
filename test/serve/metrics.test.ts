/** The Prometheus text format: HELP/TYPE once per name, labels escaped, special values spelled. */
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { formatPrometheus } from '../../src/serve/index.js';

it('formats samples grouped by name with escaped labels', () => {
  const text = formatPrometheus([
    { name: 'imakeep_x_total', help: 'Things.\nMore', type: 'counter', value: 3, labels: { route: 'log', path: 'a"b\\c' } },
    { name: 'imakeep_y', help: 'A gauge.', type: 'gauge', value: Infinity },
    { name: 'imakeep_x_total', help: 'ignored', type: 'counter', value: 4, labels: { route: 'quote' } },
  ]);
  assert.equal(
    text,
    [
      '# HELP imakeep_x_total Things.\\nMore',
      '# TYPE imakeep_x_total counter',
      'imakeep_x_total{route="log",path="a\\"b\\\\c"} 3',
      'imakeep_x_total{route="quote"} 4',
      '# HELP imakeep_y A gauge.',
      '# TYPE imakeep_y gauge',
      'imakeep_y +Inf',
      '',
    ].join('\n'),
  );
  assert.equal(formatPrometheus([]), '');
  assert.throws(() => formatPrometheus([{ name: 'bad-name', help: '', type: 'gauge', value: 1 }]), RangeError);
});
