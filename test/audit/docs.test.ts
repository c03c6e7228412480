/** docs/audit.md documents every event, every field and the whole reason and signal vocabularies. */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { EVENT_FIELDS } from '../../src/audit/encode.js';
import { REASONS, SIGNALS } from '../../src/policy/reasons.js';

const doc = readFileSync(resolve(import.meta.dirname, '../../docs/audit.md'), 'utf8');

/** The markdown between `### \`event\`` and the next heading. */
function section(event: string): string {
  const start = doc.indexOf(`### \`${event}\``);
  expect(start, `docs/audit.md has a section for ${event}`).toBeGreaterThan(-1);
  const end = doc.indexOf('\n#', start + 4);
  return doc.slice(start, end === -1 ? undefined : end);
}

describe('docs/audit.md', () => {
  it.each(Object.entries(EVENT_FIELDS))('documents every field of %s', (event, fields) => {
    const text = section(event);
    for (const field of fields) expect(text, `${event}.${field}`).toContain(`\`${field}\``);
  });

  it.each(['v', 'seq', 'ts', 'workspace', 'workspace_id', 'runtime_id', 'event', 'prev', 'hash'])('documents common field %s', (f) => {
    expect(doc).toContain(`| \`${f}\` |`);
  });

  it.each(Object.entries(REASONS))('documents reason %s with its meaning', (code, meaning) => {
    expect(doc).toContain(`| \`${code}\` | ${meaning} |`);
  });

  it.each(Object.entries(SIGNALS))('documents signal %s with its meaning', (code, meaning) => {
    expect(doc).toContain(`| \`${code}\` | ${meaning} |`);
  });
});
