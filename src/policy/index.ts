/** Public API of the policy engine. */
export * from './types.js';
export * from './reasons.js';
