/** Public API of the audit log. */
export * from './record.js';
export { openAuditLog, type AuditLogOptions, type CheckpointOptions } from './open.js';
export type { AuditLog } from './writer.js';
export { verifyAuditLog, type VerifyResult, type VerifyOptions, type BadRecord, type Recovery } from './verify.js';
export { readAuditRecords, readLocatedRecords, type LocatedRecord } from './read.js';
export { queryAuditLog, summarizeAuditLog, compileQuery, recordHost, type AuditQuery, type AuditSummary } from './query.js';
export { tailAuditLog, type TailOptions } from './tail.js';
export { recoverAuditLog, type RecoverResult } from './recover.js';
export {
  checkpointSigner,
  checkpointVerifier,
  loadCheckpointSigner,
  loadCheckpointVerifier,
  type CheckpointAlgorithm,
  type CheckpointSigner,
  type CheckpointVerifier,
} from './checkpoint.js';
export { GENESIS_HASH } from './encode.js';
