// A throwaway certificate authority for the emulator over TLS, made with the openssl CLI: a
// self-signed CA and a server certificate it signed for the given names (plus 127.0.0.1 and
// localhost), so that a client trusting only this CA can check the emulator as it checks
// Vonage. Optionally a second certificate from the same CA naming other hosts only, for
// "the certificate does not cover this name" cases. The CA's key is deleted once both are
// signed: nothing else can ever be issued under a CA someone was told to trust.
import { execFileSync } from 'node:child_process'
import { chmodSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

/** A certificate and its private key, as PEM text and as files. */
export interface IssuedCertificate {
  certPem: string
  keyPem: string
  certPath: string
  keyPath: string
}

export interface ThrowawayCa extends IssuedCertificate {
  /** The CA certificate (PEM file): what a client passes as `ca`, or NODE_EXTRA_CA_CERTS. */
  caPath: string
  caPem: string
  /** With options.alsoSigned: a certificate from the same CA for those names only. */
  alsoSigned?: IssuedCertificate
}

export interface ThrowawayCaOptions {
  /** How long every certificate is valid: 1 day unless told (the demo passes more). */
  days?: number
  /** Also sign a certificate for these names only: no IP:127.0.0.1, no localhost. */
  alsoSigned?: { names: string[] }
}

// Host names only: a name lands in an openssl configuration file, so nothing else may pass.
const DNS_NAME = /^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/i

/**
 * Writes ca.pem, server.pem and server-key.pem (and other.pem, other-key.pem with alsoSigned)
 * in `dir`, key files mode 0600. Takes a second or so: each certificate has its own RSA key.
 */
export function makeThrowawayCa(dir: string, names: string[], options: ThrowawayCaOptions = {}): ThrowawayCa {
  const days = options.days ?? 1
  if (!Number.isInteger(days) || days < 1) throw new Error(`days must be a whole number of days, not ${days}`)
  const otherNames = options.alsoSigned?.names
  for (const name of [...names, ...(otherNames ?? [])]) {
    if (!DNS_NAME.test(name)) throw new Error(`not a host name: ${JSON.stringify(name)}`)
  }
  if (otherNames?.length === 0) throw new Error('alsoSigned needs at least one name')

  // One configuration file for every step, so the system's openssl.cnf plays no part.
  const configPath = join(dir, 'throwaway-ca.cnf')
  writeFileSync(
    configPath,
    [
      '[req]',
      'distinguished_name = dn',
      'prompt = no',
      '[dn]',
      'CN = vonage-media-proxy throwaway CA',
      '[ca_ext]',
      'basicConstraints = critical, CA:TRUE',
      'keyUsage = critical, keyCertSign, cRLSign',
      'subjectKeyIdentifier = hash',
      extensionSection('server', [...names, 'localhost'], ['127.0.0.1']),
      otherNames ? extensionSection('other', otherNames, []) : '',
    ].join('\n'),
  )
  const caPath = join(dir, 'ca.pem')
  const caKeyPath = join(dir, 'ca-key.pem')
  const dayArgs = ['-days', String(days)]
  try {
    openssl([
      'req',
      '-x509',
      '-new',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-sha256',
      ...dayArgs,
      '-config',
      configPath,
      '-extensions',
      'ca_ext',
      '-keyout',
      caKeyPath,
      '-out',
      caPath,
    ])
    const issue = (section: string, commonName: string): IssuedCertificate => {
      const certPath = join(dir, `${section}.pem`)
      const keyPath = join(dir, `${section}-key.pem`)
      const requestPath = join(dir, `${section}.csr`)
      openssl([
        'req',
        '-new',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-sha256',
        '-config',
        configPath,
        '-subj',
        `/CN=${commonName}`,
        '-keyout',
        keyPath,
        '-out',
        requestPath,
      ])
      openssl([
        'x509',
        '-req',
        '-sha256',
        ...dayArgs,
        '-set_serial',
        `0x${randomSerial()}`,
        '-in',
        requestPath,
        '-CA',
        caPath,
        '-CAkey',
        caKeyPath,
        '-extfile',
        configPath,
        '-extensions',
        section,
        '-out',
        certPath,
      ])
      rmSync(requestPath, { force: true })
      chmodSync(keyPath, 0o600)
      return { certPath, keyPath, certPem: readFileSync(certPath, 'utf8'), keyPem: readFileSync(keyPath, 'utf8') }
    }
    const server = issue('server', names[0] ?? 'localhost')
    const alsoSigned = otherNames ? issue('other', otherNames[0] as string) : undefined
    return { caPath, caPem: readFileSync(caPath, 'utf8'), ...server, ...(alsoSigned ? { alsoSigned } : {}) }
  } finally {
    rmSync(caKeyPath, { force: true })
    rmSync(configPath, { force: true })
  }
}

/** A leaf certificate's extensions: a server certificate for exactly these subjectAltNames. */
function extensionSection(section: string, dnsNames: string[], ips: string[]): string {
  const altNames = [...dnsNames.map((name) => `DNS:${name}`), ...ips.map((ip) => `IP:${ip}`)]
  return [
    `[${section}]`,
    'basicConstraints = critical, CA:FALSE',
    'keyUsage = critical, digitalSignature, keyEncipherment',
    'extendedKeyUsage = serverAuth',
    'subjectKeyIdentifier = hash',
    'authorityKeyIdentifier = keyid',
    `subjectAltName = ${altNames.join(', ')}`,
  ].join('\n')
}

/** A positive 63-bit serial: certificates from one CA must not share one. */
function randomSerial(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(8))
  bytes[0] = (bytes[0] as number) & 0x7f
  return Buffer.from(bytes).toString('hex')
}

/** Runs openssl (no shell); its own message, not a stack of child_process details, on failure. */
function openssl(args: string[]): void {
  try {
    execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'], timeout: 30_000 })
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new Error('the openssl command is needed to make a throwaway CA (install OpenSSL, or put it on PATH)')
    }
    const stderr = String((error as { stderr?: Buffer }).stderr ?? '').trim()
    throw new Error(`openssl ${args[0]} failed: ${stderr || (error as Error).message}`)
  }
}
