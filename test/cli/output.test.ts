// The UX table printer: aligned columns, and any number of rows (an audit query can list hundreds of
// thousands, more than a function call takes arguments).
import { describe, expect, it } from 'vitest';
import { table } from '../../src/cli/output.js';

describe('table', () => {
  it('pads every column but the last to its widest cell', () => {
    expect(table(['seq', 'event', 'reason'], [['1', 'egress.decision', 'rule_allow'], ['10', 'dns.query', 'x']])).toBe(
      ['seq  event            reason', '1    egress.decision  rule_allow', '10   dns.query        x'].join('\n'),
    );
  });

  it('prints 500,000 rows (the widths were a Math.max over a spread of every row)', () => {
    const rows = Array.from({ length: 500_000 }, (_, i) => [String(i), 'egress.decision']);
    const text = table(['seq', 'event'], rows);
    expect(text.split('\n')).toHaveLength(500_001);
    expect(text.endsWith('499999  egress.decision')).toBe(true);
  });
});
