/** Public API of the audit log. */
export * from './record.js';
