/**
 * PKCS#12 export of the CA certificate (and, only when asked, its key). node-forge is used for the
 * container and its password-based crypto only; its toPkcs12Asn1 cannot carry ECDSA certificates or
 * keys, so the PFX is assembled here from forge's ASN.1 and PBE primitives. Loaded on demand by
 * export.ts, so nothing else pays for loading forge. Never writes files, never logs the key or password.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { dirname } from 'node:path';
import forge from 'node-forge';
import { MicroagentError } from '../errors.js';
import type { CaExportOptions, ExportableCa } from './export.js';
import { readKeyPem } from './store.js';

const { asn1, pki } = forge;
const MAC_ITERATIONS = 2048;
const KEY_ITERATIONS = 10_000;

const seq = (items: forge.asn1.Asn1[]) => asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, items);
const set = (items: forge.asn1.Asn1[]) => asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SET, true, items);
const oid = (o: string) => asn1.create(asn1.Class.UNIVERSAL, asn1.Type.OID, false, asn1.oidToDer(o).getBytes());
const octets = (bytes: string) => asn1.create(asn1.Class.UNIVERSAL, asn1.Type.OCTETSTRING, false, bytes);
const explicit0 = (inner: forge.asn1.Asn1) => asn1.create(asn1.Class.CONTEXT_SPECIFIC, 0, true, [inner]);
const der = (node: forge.asn1.Asn1) => asn1.toDer(node).getBytes();

/** PKCS#7 ContentInfo of type data wrapping DER bytes. */
const dataContentInfo = (bytes: string) => seq([oid(pki.oids['data'] as string), explicit0(octets(bytes))]);

function bagAttributes(localKeyId: string, friendlyName: string): forge.asn1.Asn1 {
  return set([
    seq([oid(pki.oids['localKeyId'] as string), set([octets(localKeyId)])]),
    seq([oid(pki.oids['friendlyName'] as string), set([asn1.create(asn1.Class.UNIVERSAL, asn1.Type.BMPSTRING, false, friendlyName)])]),
  ]);
}

async function readKeyDer(ca: ExportableCa): Promise<string> {
  // The same checks as loading: no symlink, owner-only mode, even though the CA was loaded before.
  const pem = await readKeyPem(dirname(ca.keyPath), ca.keyPath);
  return createPrivateKey(pem).export({ type: 'pkcs8', format: 'der' }).toString('binary');
}

export async function toPkcs12(ca: ExportableCa, options: CaExportOptions): Promise<Buffer> {
  const password = options.password ?? '';
  if (options.includeKey === true && password === '') {
    throw new MicroagentError('invalid', 'refusing to export the CA key in a PKCS#12 without a password', {
      code: 'ca.export_needs_password',
      remediation: 'pass --password (the key would otherwise be readable by anyone holding the file)',
    });
  }
  const certDer = new X509Certificate(ca.certPem).raw.toString('binary');
  const localKeyId = forge.md.sha1.create().update(certDer).digest().getBytes();
  const attrs = bagAttributes(localKeyId, `microagent CA ${ca.workspace}`);
  const certBag = seq([
    oid(pki.oids['certBag'] as string),
    explicit0(seq([oid(pki.oids['x509Certificate'] as string), explicit0(octets(certDer))])),
    attrs,
  ]);
  const contents = [dataContentInfo(der(seq([certBag])))];
  if (options.includeKey === true) {
    const keyInfo = asn1.fromDer(await readKeyDer(ca));
    const encrypted = pki.encryptPrivateKeyInfo(keyInfo, forge.util.encodeUtf8(password), {
      algorithm: 'aes256',
      prfAlgorithm: 'sha256',
      count: KEY_ITERATIONS,
    });
    const keyBag = seq([oid(pki.oids['pkcs8ShroudedKeyBag'] as string), explicit0(encrypted), attrs]);
    contents.push(dataContentInfo(der(seq([keyBag]))));
  }
  const authSafe = der(seq(contents));
  // MAC: HMAC-SHA-256 keyed by the PKCS#12 KDF (RFC 7292 appendix B), as OpenSSL 3 writes it.
  const salt = forge.random.getBytesSync(16);
  const macKey = forge.pkcs12.generateKey(password, forge.util.createBuffer(salt), 3, MAC_ITERATIONS, 32, forge.md.sha256.create());
  const hmac = forge.hmac.create();
  hmac.start('sha256', macKey.getBytes());
  hmac.update(authSafe);
  const macData = seq([
    seq([seq([oid(pki.oids['sha256'] as string), asn1.create(asn1.Class.UNIVERSAL, asn1.Type.NULL, false, '')]), octets(hmac.digest().getBytes())]),
    octets(salt),
    asn1.create(asn1.Class.UNIVERSAL, asn1.Type.INTEGER, false, asn1.integerToDer(MAC_ITERATIONS).getBytes()),
  ]);
  const pfx = seq([
    asn1.create(asn1.Class.UNIVERSAL, asn1.Type.INTEGER, false, asn1.integerToDer(3).getBytes()),
    dataContentInfo(authSafe),
    macData,
  ]);
  return Buffer.from(der(pfx), 'binary');
}

/** The CA certificate in `format` (PEM text, DER, or a PKCS#12 bundle). */
