/**
 * microagent as a library: everything the CLI does, a program can do by importing these.
 */
export * from './errors.js';
export * from './policy/index.js';
export * from './audit/index.js';
export * from './ca/index.js';
export * from './mediation/index.js';
export * from './proxy/dns/index.js';
export * from './proxy/index.js';
