// Every setting's validation path through the real process: a bad setting exits 78 with one stderr line naming it, never quoting the key; --check-config agrees.
import assert from 'node:assert/strict'
import { generateKeyPairSync } from 'node:crypto'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { createServer, type Server } from 'node:net'
import { availableParallelism, tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { APPLICATION_ID, keys, makeKeys, type ProcessResult, runMain } from './helpers.js'

const EX_CONFIG = 78
const JWT_PATTERN = /eyJ[\w-]+\.[\w-]+\.[\w-]+/

const ecPem = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  .privateKey.export({ type: 'pkcs8', format: 'pem' })
  .toString()
const weakPem = makeKeys(1024).pkcs8
const notPem = 'this-is-a-secret-looking-value-but-no-pem-0123456789'

/** A valid configuration on ephemeral ports; each case changes exactly one thing. */
const VALID: Record<string, string> = {
  VONAGE_APPLICATION_ID: APPLICATION_ID,
  VONAGE_PRIVATE_KEY: keys.pkcs8,
  UPSTREAM_BASE_URL: 'http://127.0.0.1:9',
  HOST: '127.0.0.1',
  PORT: '0',
  ADMIN_PORT: '0',
}

function without(env: Record<string, string>, name: string): Record<string, string> {
  const { [name]: _, ...rest } = env
  return rest
}

/** Fails if any 16-character run of a PEM's base64 body appears in `text`. */
function assertNoPemPart(text: string, pem: string, where: string): void {
  const body = pem
    .split('\n')
    .filter((line) => line.trim() !== '' && !line.startsWith('-----'))
    .join('')
  for (let i = 0; i + 16 <= body.length; i++) {
    assert.ok(!text.includes(body.slice(i, i + 16)), `${where} quotes part of a private key`)
  }
}

/** Matches a setting's name as a whole word: PORT must not be satisfied by ADMIN_PORT. */
function naming(setting: string): RegExp {
  return new RegExp(`(?<![A-Za-z0-9_])${setting}(?![A-Za-z0-9_])`)
}

/** Exit 78, nothing on stdout, exactly one stderr line naming the settings, no key material. */
function assertConfigError(result: ProcessResult, settings: string[], says?: RegExp, secrets: string[] = []): string {
  assert.equal(result.code, EX_CONFIG, `exit code (stderr: ${result.stderr})`)
  assert.equal(result.stdout, '', 'nothing on stdout: the process stopped before it listened')
  assert.match(result.stderr, /^[^\n]+\n$/, 'exactly one stderr line')
  const line = result.stderr.trimEnd()
  for (const setting of settings) assert.match(line, naming(setting), `"${line}" names ${setting}`)
  if (says) assert.match(line, says, 'says what is wrong')
  for (const pem of [keys.pkcs8, keys.pkcs1, ecPem, weakPem]) assertNoPemPart(result.stderr, pem, 'stderr')
  for (const secret of secrets) assert.ok(!result.stderr.includes(secret), 'stderr quotes a secret value')
  return line
}

/** Spawns at once: each costs about a second of CPU, so more than one per core only adds contention. */
const PARALLEL = { concurrency: Math.max(2, availableParallelism()) }

function listenOnFreePort(): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve(server))
  })
}

function portOf(server: Server): string {
  const address = server.address()
  assert.ok(address && typeof address === 'object')
  return String(address.port)
}

test('invalid settings stop the process with exit 78 and one line naming the setting', PARALLEL, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'config-validation-'))
  t.after(() => rm(dir, { recursive: true, force: true }))
  const ecFile = join(dir, 'ec.pem')
  const pkcs8File = join(dir, 'pkcs8.pem')
  const unknownKeyFile = join(dir, 'unknown-key.yaml')
  const validFile = join(dir, 'valid.yaml')
  const badYamlFile = join(dir, 'bad.yaml')
  await Promise.all([
    writeFile(ecFile, ecPem),
    writeFile(pkcs8File, keys.pkcs8),
    writeFile(unknownKeyFile, 'LOG_LEVEL: info\nupstream_base_ur: https://api-eu.nexmo.com\n'),
    writeFile(validFile, 'LOG_LEVEL: debug\nJWT_TTL_SECONDS: 120\n'),
    writeFile(badYamlFile, 'LOG_LEVEL: info\nJWT_TTL_SECONDS: [120\n'),
  ])

  const cases: {
    name: string
    env: Record<string, string>
    args?: string[]
    /** The settings the line must name. */
    settings: string[]
    /** What the line must say is wrong. */
    says: RegExp
    secrets?: string[]
    /** Also run with --check-config, which must exit 78 with the very same line. */
    checkConfigToo?: boolean
  }[] = [
    {
      name: 'missing application id',
      env: without(VALID, 'VONAGE_APPLICATION_ID'),
      settings: ['VONAGE_APPLICATION_ID'],
      says: /required/,
    },
    {
      name: 'application id not a UUID',
      env: { ...VALID, VONAGE_APPLICATION_ID: 'my-app' },
      settings: ['VONAGE_APPLICATION_ID'],
      says: /UUID/,
    },
    {
      name: 'no key at all',
      env: without(VALID, 'VONAGE_PRIVATE_KEY'),
      settings: ['VONAGE_PRIVATE_KEY_PATH'],
      says: /required/,
    },
    {
      name: 'unreadable key path',
      env: { ...without(VALID, 'VONAGE_PRIVATE_KEY'), VONAGE_PRIVATE_KEY_PATH: join(dir, 'missing.pem') },
      settings: ['VONAGE_PRIVATE_KEY_PATH'],
      says: /cannot be read/,
    },
    {
      name: 'key that is not PEM',
      env: { ...VALID, VONAGE_PRIVATE_KEY: notPem },
      settings: ['VONAGE_PRIVATE_KEY'],
      says: /PEM/,
      secrets: [notPem],
    },
    {
      name: 'EC key from a file',
      env: { ...without(VALID, 'VONAGE_PRIVATE_KEY'), VONAGE_PRIVATE_KEY_PATH: ecFile },
      settings: ['VONAGE_PRIVATE_KEY_PATH'],
      says: /is an EC key; .*RSA/,
    },
    {
      name: '1024-bit RSA key, at start-up and with --check-config alike',
      env: { ...VALID, VONAGE_PRIVATE_KEY: weakPem },
      settings: ['VONAGE_PRIVATE_KEY'],
      says: /1024.*2048/,
      checkConfigToo: true,
    },
    {
      name: 'both key settings',
      // A valid file and a valid PEM: only the ambiguity itself is wrong.
      env: { ...VALID, VONAGE_PRIVATE_KEY_PATH: pkcs8File },
      settings: ['VONAGE_PRIVATE_KEY_PATH', 'VONAGE_PRIVATE_KEY'],
      says: /both/,
    },
    {
      name: 'upstream not a URL',
      env: { ...VALID, UPSTREAM_BASE_URL: 'api-us.nexmo.com' },
      settings: ['UPSTREAM_BASE_URL'],
      says: /URL/,
    },
    {
      name: 'upstream ftp URL',
      env: { ...VALID, UPSTREAM_BASE_URL: 'ftp://api-us.nexmo.com' },
      settings: ['UPSTREAM_BASE_URL'],
      says: /https/,
    },
    {
      name: 'http upstream that is not loopback: the token would travel in clear',
      env: { ...VALID, UPSTREAM_BASE_URL: 'http://api-us.nexmo.com' },
      settings: ['UPSTREAM_BASE_URL'],
      says: /https.*clear.*https:\/\/api-us\.nexmo\.com/,
      checkConfigToo: true,
    },
    {
      name: 'upstream base URL ending in /v3/media',
      env: { ...VALID, UPSTREAM_BASE_URL: 'https://api-us.nexmo.com/v3/media' },
      settings: ['UPSTREAM_BASE_URL'],
      says: /\/v3\/media.*write https:\/\/api-us\.nexmo\.com\)/,
      checkConfigToo: true,
    },
    {
      name: 'upstream base URL ending in /v1/files/',
      env: { ...VALID, UPSTREAM_BASE_URL: 'https://gateway.example/vonage/v1/files/' },
      settings: ['UPSTREAM_BASE_URL'],
      says: /\/v1\/files.*write https:\/\/gateway\.example\/vonage\)/,
    },
    {
      name: 'a client key shorter than 16 characters',
      env: { ...VALID, INBOUND_API_KEYS: 'a-long-enough-client-key-1,short-key-2' },
      settings: ['INBOUND_API_KEYS'],
      says: /key 2 .*at least 16/,
      secrets: ['short-key-2', 'a-long-enough-client-key-1'],
    },
    {
      name: 'the same client key twice',
      env: { ...VALID, INBOUND_API_KEYS: 'a-long-enough-client-key-1,a-long-enough-client-key-1' },
      settings: ['INBOUND_API_KEYS'],
      says: /key 2 twice/,
      secrets: ['a-long-enough-client-key-1'],
    },
    {
      name: 'an UPSTREAM_HOSTS that lists no host',
      env: { ...VALID, UPSTREAM_HOSTS: ' , ' },
      settings: ['UPSTREAM_HOSTS'],
      says: /lists no host/,
    },
    {
      name: 'an UPSTREAM_HOSTS entry with a port',
      env: { ...VALID, UPSTREAM_HOSTS: 'api-us.nexmo.com:443' },
      settings: ['UPSTREAM_HOSTS'],
      says: /host names only/,
    },
    {
      name: "the example file's placeholder client key",
      env: { ...VALID, INBOUND_API_KEYS: 'replace-me-with-a-long-random-key' },
      settings: ['INBOUND_API_KEYS'],
      says: /placeholder/,
    },
    {
      name: 'a missing --config file names the flag',
      env: VALID,
      args: ['--config', join(dir, 'missing.yaml')],
      settings: ['--config'],
      says: /cannot be read \(ENOENT/,
    },
    {
      name: 'invalid YAML says where',
      env: VALID,
      args: ['--config', badYamlFile],
      settings: ['--config'],
      says: /not valid YAML at line \d+, column \d+/,
    },
    {
      name: 'ADMIN_HOST not an address',
      env: { ...VALID, ADMIN_HOST: 'not a host!' },
      settings: ['ADMIN_HOST'],
      says: /address/,
    },
    { name: 'PORT out of range', env: { ...VALID, PORT: '70000' }, settings: ['PORT'], says: /65535/ },
    { name: 'PORT not a number', env: { ...VALID, PORT: 'abc' }, settings: ['PORT'], says: /number/ },
    {
      name: 'ADMIN_PORT out of range',
      env: { ...VALID, ADMIN_PORT: '65536' },
      settings: ['ADMIN_PORT'],
      says: /65535/,
    },
    {
      name: 'JWT_TTL_SECONDS 29',
      env: { ...VALID, JWT_TTL_SECONDS: '29' },
      settings: ['JWT_TTL_SECONDS'],
      says: /30 to 86400/,
    },
    {
      name: 'JWT_TTL_SECONDS 86401',
      env: { ...VALID, JWT_TTL_SECONDS: '86401' },
      settings: ['JWT_TTL_SECONDS'],
      says: /30 to 86400/,
    },
    { name: 'unknown LOG_LEVEL', env: { ...VALID, LOG_LEVEL: 'loud' }, settings: ['LOG_LEVEL'], says: /info/ },
    {
      name: 'unknown key in the YAML file',
      env: VALID,
      args: ['--config', unknownKeyFile],
      settings: ['upstream_base_ur'],
      says: /unknown/,
    },
    {
      name: 'YAML value overridden by a bad env value',
      env: { ...VALID, CONFIG_FILE: validFile, LOG_LEVEL: 'loud' },
      settings: ['LOG_LEVEL'],
      says: /info/,
    },
  ]

  await Promise.all(
    cases.map(({ name, env, args = [], settings, says, secrets, checkConfigToo }) =>
      t.test(name, async () => {
        const [startup, check] = await Promise.all([
          runMain(args, env),
          checkConfigToo ? runMain(['--check-config', ...args], env) : undefined,
        ])
        const line = assertConfigError(startup, settings, says, secrets)
        if (check) assert.equal(assertConfigError(check, settings, says, secrets), line)
      }),
    ),
  )
})

test('--check-config accepts PKCS#8, PKCS#1 and literal "\\n" keys without listening', PARALLEL, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'check-config-'))
  t.after(() => rm(dir, { recursive: true, force: true }))
  const pkcs8File = join(dir, 'pkcs8.pem')
  const settingsFile = join(dir, 'settings.yaml')
  await Promise.all([
    writeFile(pkcs8File, keys.pkcs8),
    writeFile(
      settingsFile,
      `VONAGE_APPLICATION_ID: ${APPLICATION_ID}\nVONAGE_PRIVATE_KEY_PATH: ${pkcs8File}\nJWT_TTL_SECONDS: 10\n`,
    ),
  ])
  // Both ports are taken: a --check-config that tried to listen would fail.
  const taken = await Promise.all([listenOnFreePort(), listenOnFreePort()])
  t.after(() => Promise.all(taken.map((server) => new Promise((resolve) => server.close(resolve)))))
  const ports = { PORT: portOf(taken[0] as Server), ADMIN_PORT: portOf(taken[1] as Server) }
  const base = { ...VALID, ...ports }

  const cases: { name: string; env: Record<string, string>; args?: string[] }[] = [
    { name: 'PKCS#8 key file', env: { ...without(base, 'VONAGE_PRIVATE_KEY'), VONAGE_PRIVATE_KEY_PATH: pkcs8File } },
    { name: 'PKCS#1 PEM in VONAGE_PRIVATE_KEY', env: { ...base, VONAGE_PRIVATE_KEY: keys.pkcs1 } },
    {
      name: 'PEM with literal \\n sequences',
      env: { ...base, VONAGE_PRIVATE_KEY: keys.pkcs8.trimEnd().replaceAll('\n', '\\n') },
    },
    {
      // The file supplies the id and key; its out-of-range TTL is overridden by the environment.
      name: 'YAML file with a value the environment overrides',
      env: { ...ports, HOST: '127.0.0.1', UPSTREAM_BASE_URL: 'http://127.0.0.1:9', JWT_TTL_SECONDS: '60' },
      args: ['--config', settingsFile],
    },
  ]

  await Promise.all(
    cases.map(({ name, env, args = [] }) =>
      t.test(name, async () => {
        const result = await runMain(['--check-config', ...args], env)
        assert.equal(result.code, 0, `exit code (stderr: ${result.stderr})`)
        assert.equal(result.stderr, '')
        assert.ok(result.stdout.trim().length > 0, 'says the configuration is fine')
        assert.doesNotMatch(result.stdout, JWT_PATTERN, 'the minted token is not printed')
        for (const pem of [keys.pkcs8, keys.pkcs1]) assertNoPemPart(result.stdout, pem, 'stdout')
      }),
    ),
  )
})
