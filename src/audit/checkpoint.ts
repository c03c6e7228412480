/**
 * Signed checkpoints over the hash chain. The chain alone shows edits, deletions and reorderings, but
 * anyone who can write the file can rebuild it from the cut point, and nobody can see records removed
 * from the end. A checkpoint signs the head of the chain with a key that lives on the host only (the
 * guest never sees it): HMAC-SHA256 with a shared secret, or Ed25519 where the verifier holds only the
 * public key. Never log or record key material; `key_id` is a one-way fingerprint.
 */
import { createHash, createHmac, createPrivateKey, createPublicKey, createSecretKey, sign, timingSafeEqual, verify, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { MicroagentError } from '../errors.js';
import type { CheckpointEvent } from './record.js';

export type CheckpointAlgorithm = CheckpointEvent['algorithm'];

/** What the writer signs with: a secret key (HMAC) or an Ed25519 private key. */
export interface CheckpointSigner {
  readonly algorithm: CheckpointAlgorithm;
  readonly key: KeyObject;
  readonly keyId: string;
}

/** What a verifier checks with: the same secret (HMAC) or the Ed25519 public key. */
export interface CheckpointVerifier {
  readonly algorithm: CheckpointAlgorithm;
  readonly key: KeyObject;
  readonly keyId: string;
}

const MIN_HMAC_KEY_BYTES = 32;

function signedMessage(c: Pick<CheckpointEvent, 'key_id' | 'upto_seq' | 'upto_hash' | 'final'>): Buffer {
  return Buffer.from(`microagent-audit-checkpoint/v1\n${c.key_id}\n${c.upto_seq}\n${c.upto_hash}\n${c.final}`);
}

/** A fingerprint naming the key in records without revealing it. */
export function keyIdOf(key: KeyObject): string {
  const material =
    key.type === 'secret'
      ? Buffer.concat([Buffer.from('microagent-audit-key-id\n'), key.export()])
      : (key.type === 'private' ? createPublicKey(key) : key).export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(material).digest('hex').slice(0, 16);
}

function algorithmOf(key: KeyObject, where: string): CheckpointAlgorithm {
  if (key.type === 'secret') {
    if ((key.symmetricKeySize ?? 0) < MIN_HMAC_KEY_BYTES) {
      throw new MicroagentError('invalid', `${where}: HMAC key is shorter than ${MIN_HMAC_KEY_BYTES} bytes`, {
        code: 'audit.bad_key',
        remediation: 'Generate one with: head -c 32 /dev/urandom | base64 > audit.key',
      });
    }
    return 'hmac-sha256';
  }
  if (key.asymmetricKeyType === 'ed25519') return 'ed25519';
  throw new MicroagentError('unsupported', `${where}: ${key.asymmetricKeyType ?? 'unknown'} keys cannot sign audit checkpoints`, {
    code: 'audit.bad_key',
    remediation: 'Use an Ed25519 key (openssl genpkey -algorithm ed25519) or a 32-byte HMAC secret.',
  });
}

/** A signer from a key object: secret bytes (HMAC) or an Ed25519 private key. */
export function checkpointSigner(key: KeyObject | Buffer, keyId?: string): CheckpointSigner {
  const keyObject = Buffer.isBuffer(key) ? createSecretKey(key) : key;
  if (keyObject.type === 'public') {
    throw new MicroagentError('invalid', 'an Ed25519 public key cannot sign audit checkpoints', {
      code: 'audit.bad_key',
      remediation: 'Give the writer the private key; give verifiers the public key.',
    });
  }
  return { algorithm: algorithmOf(keyObject, 'checkpoint key'), key: keyObject, keyId: keyId ?? keyIdOf(keyObject) };
}

async function readKeyFile(path: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (err) {
    throw new MicroagentError('not_found', `cannot read audit key file ${path}: ${(err as Error).message}`, {
      code: 'audit.bad_key',
      remediation: 'Pass the path of the PEM Ed25519 key or the HMAC secret file the log was written with.',
      cause: err,
    });
  }
}

/** PEM means Ed25519; anything else is an HMAC secret (trailing whitespace trimmed). */
function parseKeyFile(bytes: Buffer, path: string, want: 'private' | 'public'): KeyObject {
  const text = bytes.toString('utf8');
  if (!text.trimStart().startsWith('-----BEGIN')) return createSecretKey(Buffer.from(text.trimEnd(), 'utf8'));
  try {
    if (text.includes('PRIVATE KEY')) {
      const priv = createPrivateKey(text);
      return want === 'private' ? priv : createPublicKey(priv);
    }
    if (want === 'private') {
      throw new MicroagentError('invalid', `${path} holds a public key; the writer needs the private key`, {
        code: 'audit.bad_key',
        remediation: 'Give the writer the private key; give verifiers the public key.',
      });
    }
    return createPublicKey(text);
  } catch (err) {
    if (err instanceof MicroagentError) throw err;
    throw new MicroagentError('invalid', `${path} is not a readable PEM key: ${(err as Error).message}`, {
      code: 'audit.bad_key',
      remediation: 'Use an Ed25519 key in PEM form (openssl genpkey -algorithm ed25519 -out audit.pem).',
      cause: err,
    });
  }
}

export async function loadCheckpointSigner(path: string): Promise<CheckpointSigner> {
  return checkpointSigner(parseKeyFile(await readKeyFile(path), path, 'private'));
}

export function checkpointVerifier(key: KeyObject | Buffer): CheckpointVerifier {
  const keyObject = Buffer.isBuffer(key) ? createSecretKey(key) : key.type === 'private' ? createPublicKey(key) : key;
  return { algorithm: algorithmOf(keyObject, 'verify key'), key: keyObject, keyId: keyIdOf(keyObject) };
}

export async function loadCheckpointVerifier(path: string): Promise<CheckpointVerifier> {
  return checkpointVerifier(parseKeyFile(await readKeyFile(path), path, 'public'));
}

/** Builds the checkpoint event sealing the chain at (`uptoSeq`, `uptoHash`). */
export function signCheckpoint(signer: CheckpointSigner, uptoSeq: number, uptoHash: string, final: boolean): CheckpointEvent {
  const fields = { key_id: signer.keyId, upto_seq: uptoSeq, upto_hash: uptoHash, final };
  const message = signedMessage(fields);
  const signature =
    signer.algorithm === 'hmac-sha256'
      ? createHmac('sha256', signer.key).update(message).digest('hex')
      : sign(null, message, signer.key).toString('base64');
  return { event: 'audit.checkpoint', algorithm: signer.algorithm, ...fields, signature };
}

/** Null when the signature is valid, else what is wrong. */
export function checkCheckpointSignature(verifier: CheckpointVerifier, c: CheckpointEvent): string | null {
  if (c.algorithm !== verifier.algorithm) {
    return `checkpoint is signed with ${c.algorithm} but the verify key is ${verifier.algorithm}`;
  }
  const message = signedMessage(c);
  let valid: boolean;
  if (c.algorithm === 'hmac-sha256') {
    const expected = createHmac('sha256', verifier.key).update(message).digest();
    const given = Buffer.from(c.signature, 'hex');
    valid = given.length === expected.length && timingSafeEqual(given, expected);
  } else {
    valid = verify(null, message, verifier.key, Buffer.from(c.signature, 'base64'));
  }
  if (valid) return null;
  return c.key_id === verifier.keyId
    ? 'checkpoint signature is invalid (the records it seals were rewritten, or it was forged)'
    : `checkpoint signature is invalid: it names key ${c.key_id}, the verify key is ${verifier.keyId}`;
}
