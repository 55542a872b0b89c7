// The command line a person meets first: --help and --version (and -h, -v), a misspelt
// setting warned about, an empty one taken as unset, and a port that is taken or an address
// that does not resolve said in one line naming the setting, never a stack trace.
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { createServer, type Server } from 'node:net'
import { test } from 'node:test'
import { APPLICATION_ID, keys, proxyEnv, REPO_ROOT, runMain, spawnProxy } from './helpers.js'

const VERSION = (JSON.parse(readFileSync(`${REPO_ROOT}/package.json`, 'utf8')) as { version: string }).version
const SETTINGS = [
  'VONAGE_APPLICATION_ID',
  'VONAGE_PRIVATE_KEY_PATH',
  'VONAGE_PRIVATE_KEY',
  'UPSTREAM_BASE_URL',
  'HOST',
  'ADMIN_HOST',
  'PORT',
  'ADMIN_PORT',
  'INBOUND_API_KEYS',
  'JWT_TTL_SECONDS',
  'UPSTREAM_CONNECT_TIMEOUT_MS',
  'UPSTREAM_HEADERS_TIMEOUT_MS',
  'UPSTREAM_BODY_TIMEOUT_MS',
  'MAX_IN_FLIGHT_REQUESTS',
  'SHUTDOWN_GRACE_MS',
  'LOG_LEVEL',
  'CACHE_DIR',
  'CACHE_MAX_BYTES',
  'LINK_SIGNING_KEYS',
  'LINK_MAX_TTL_SECONDS',
  'PUBLIC_BASE_URL',
  'CORS_ALLOWED_ORIGINS',
  'UPSTREAM_TRACE_PROPAGATION',
]
const VALID = {
  VONAGE_APPLICATION_ID: APPLICATION_ID,
  VONAGE_PRIVATE_KEY: keys.pkcs8,
  UPSTREAM_BASE_URL: 'http://127.0.0.1:9',
  PORT: '0',
  ADMIN_PORT: '0',
}

test('--help and -h list every setting with its default, and the flags; exit 0', async () => {
  for (const flag of ['--help', '-h']) {
    const result = await runMain([flag], {})
    assert.equal(result.code, 0)
    assert.equal(result.stderr, '')
    const lines = result.stdout.split('\n')
    for (const setting of SETTINGS) {
      assert.equal(lines.filter((line) => line.trimStart().startsWith(`${setting} `)).length, 1, `${flag}: ${setting}`)
    }
    assert.match(result.stdout, /^\s+PORT\s.*\[8080\]$/m)
    assert.match(result.stdout, /^\s+JWT_TTL_SECONDS\s.*\[900\]$/m)
    for (const option of ['--config', '--check-config', '--help', '--version'])
      assert.ok(result.stdout.includes(option))
    assert.match(result.stdout, /OTEL_EXPORTER_OTLP_ENDPOINT/)
  }
})

test('--version and -v print the version; exit 0', async () => {
  for (const flag of ['--version', '-v']) {
    const result = await runMain([flag], {})
    assert.deepEqual(result, { code: 0, stdout: `${VERSION}\n`, stderr: '' })
  }
})

test('an unknown option is a usage error (64) that shows the usage', async () => {
  const result = await runMain(['--verbose'], VALID)
  assert.equal(result.code, 64)
  assert.match(result.stderr, /usage: node dist\/main\.js/)
})

test('a misspelt setting is warned about, with a guess; an empty one keeps its default', async () => {
  const result = await runMain(['--check-config'], { ...VALID, JWT_TTL: '10', JWT_TTL_SECONDS: '', LOG_LEVEL: '' })
  assert.equal(result.code, 0, result.stderr)
  assert.equal(
    result.stderr,
    'warning: JWT_TTL is not a setting of vonage-media-proxy and is ignored (did you mean JWT_TTL_SECONDS?)\n',
  )
})

test('the start-up line says the version, and the admin port listens on ADMIN_HOST', async (t) => {
  const proxy = await spawnProxy(t, proxyEnv('http://127.0.0.1:9', { ADMIN_HOST: '127.0.0.2' }))
  assert.equal(new URL(proxy.mediaUrl).hostname, '127.0.0.1')
  assert.equal(new URL(proxy.adminUrl).hostname, '127.0.0.2')
  const line = proxy
    .stdout()
    .split('\n')
    .find((entry) => entry.includes('vonage-media-proxy listening'))
  assert.equal((JSON.parse(line ?? '{}') as { version?: string }).version, VERSION)
})

test('a port that is taken: one line naming the setting and the address, exit 1', async (t) => {
  const taken = await new Promise<Server>((resolve) => {
    const server = createServer()
    server.listen(0, '127.0.0.1', () => resolve(server))
  })
  t.after(() => new Promise((resolve) => taken.close(resolve)))
  const port = (taken.address() as { port: number }).port
  for (const [setting, env] of [
    ['PORT', { PORT: String(port) }],
    ['ADMIN_PORT', { ADMIN_PORT: String(port) }],
  ] as const) {
    const result = await runMain([], { ...VALID, HOST: '127.0.0.1', ...env })
    assert.equal(result.code, 1, result.stderr)
    assert.equal(result.stderr, `error: ${setting} ${port} on 127.0.0.1 is already in use (EADDRINUSE)\n`)
  }
})

test('a listen address that does not resolve: one line at start-up (exit 1) and from --check-config (78)', async () => {
  const env = { ...VALID, HOST: 'no-such-host.invalid' }
  const startup = await runMain([], env)
  assert.equal(startup.code, 1)
  assert.match(
    startup.stderr,
    /^error: HOST no-such-host\.invalid does not resolve to an address \((ENOTFOUND|EAI_AGAIN)\)\n$/,
  )
  const check = await runMain(['--check-config'], env)
  assert.equal(check.code, 78)
  assert.equal(check.stderr, startup.stderr.replace(/^error:/, 'config error:'))
})

test('a misspelt INBOUND_API_KEYS is warned about: client authentication would otherwise be silently off', async () => {
  const result = await runMain(['--check-config'], { ...VALID, INBOUND_API_KEY: 'a-client-key-of-enough-length' })
  assert.equal(result.code, 0, result.stderr)
  assert.match(result.stderr, /^warning: INBOUND_API_KEY is not a setting .*did you mean INBOUND_API_KEYS\?\)\n$/)
  assert.ok(!result.stderr.includes('a-client-key-of-enough-length'), 'the value is not quoted')
})
