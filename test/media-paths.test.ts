// Proves the path decision (relay/media-paths.ts) that keeps the proxy from being an open relay
// with a Vonage credential attached: the routes it accepts, and, fuzzed over 20,000 paths built
// from lookalike hosts, ports, user info, trailing dots, percent-encoding, case and odd
// segments, that nothing reaches a host off the list or any path but /v3/media/<uuid> and
// /v1/files/<uuid>.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import fc from 'fast-check'
import { loadConfig } from '../src/config.js'
import { decidePath, type MediaPaths } from '../src/relay/media-paths.js'
import { keys } from './helpers.js'

const ID = '1b456509-974c-458b-aafa-45fc48a4d976'
const config = loadConfig({
  env: { VONAGE_APPLICATION_ID: ID, VONAGE_PRIVATE_KEY: keys.pkcs8, UPSTREAM_BASE_URL: 'https://api-us.nexmo.com' },
})
const PATHS: MediaPaths = { base: config.upstreamBaseUrl, hosts: config.upstreamHosts }
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

function target(path: string) {
  const decision = decidePath(path, PATHS)
  return decision.kind === 'file' ? decision.target : decision.kind
}

test('the routes: short forms to UPSTREAM_BASE_URL, host-prefixed forms to that host over https', () => {
  assert.deepEqual(target(`/media/${ID}`), {
    origin: 'https://api-us.nexmo.com',
    host: 'api-us.nexmo.com',
    path: `/v3/media/${ID}`,
    id: ID,
  })
  assert.equal((target(`/v3/media/${ID}?x=1`) as { path: string }).path, `/v3/media/${ID}`)
  assert.equal((target(`/v1/files/${ID}`) as { path: string }).path, `/v1/files/${ID}`)
  assert.deepEqual(target(`/api-eu.vonage.com/v1/files/${ID}`), {
    origin: 'https://api-eu.vonage.com',
    host: 'api-eu.vonage.com',
    path: `/v1/files/${ID}`,
    id: ID,
  })
  assert.equal((target(`/API-EU.Nexmo.COM/v3/media/${ID}`) as { host: string }).host, 'api-eu.nexmo.com')
  // The absolute form names this server: its authority is no route, and never an upstream.
  assert.deepEqual(target(`http://evil.example/v3/media/${ID}`), target(`/v3/media/${ID}`))
  assert.equal((target(`https://x/api-eu.nexmo.com/v1/files/${ID}`) as { host: string }).host, 'api-eu.nexmo.com')
  assert.equal(target(`http://evil.example/evil.example/v3/media/${ID}`), 'host-not-allowed')
  // A path prefix of UPSTREAM_BASE_URL (an egress gateway) is kept for the short forms only.
  const gateway: MediaPaths = { base: new URL('https://gateway.example/vonage/'), hosts: PATHS.hosts }
  assert.equal(
    (decidePath(`/v1/files/${ID}`, gateway) as { target: { path: string } }).target.path,
    `/vonage/v1/files/${ID}`,
  )
})

test('a host that is not exactly a listed name is refused, whatever it looks like', () => {
  for (const host of [
    'api-us.nexmo.com:443',
    'api-us.nexmo.com.',
    'user@api-us.nexmo.com',
    'api-us.nexmo.com@evil.example',
    '%61pi-us.nexmo.com',
    'api-us%2enexmo.com',
    'evil.example',
    'nexmo.com',
    'api-us.nexmo.com.evil.example',
    'evilapi-us.nexmo.com',
    '127.0.0.1',
    'localhost',
    '[::1]',
    '',
    '..',
  ]) {
    assert.equal(target(`/${host}/v3/media/${ID}`), 'host-not-allowed', host)
  }
})

test('anything but a single UUID under a media prefix is a bad id; other paths are not media', () => {
  for (const path of [
    '/media/',
    '/media/abc',
    `/media/${ID}/info`,
    `/v3/media/${ID}/`,
    `/v3/media/%31${ID.slice(1)}`,
    `/v1/files/../${ID}`,
    `/api-us.nexmo.com/v1/files/${ID}x`,
  ]) {
    assert.equal(target(path), 'bad-id', path)
  }
  for (const path of [
    '/',
    '/metrics',
    `/v3/other/${ID}`,
    `/api-us.nexmo.com/v2/media/${ID}`,
    `/api-us.nexmo.com/${ID}`,
  ]) {
    assert.equal(target(path), 'not-media', path)
  }
})

const LISTED = [...PATHS.hosts]
const hostArb = fc.oneof(
  fc.constantFrom(...LISTED),
  fc.constantFrom(...LISTED).map((host) => host.toUpperCase()),
  fc
    .tuple(
      fc.constantFrom(...LISTED),
      fc.constantFrom(':443', ':8443', '.', '..', '%2e', '@evil.example', '\\', ';x', '#'),
    )
    .map(([host, suffix]) => host + suffix),
  fc
    .tuple(fc.constantFrom('user@', 'a:b@', '%61', 'evil.', '.', 'x'), fc.constantFrom(...LISTED))
    .map(([prefix, host]) => prefix + host),
  fc.constantFrom(...LISTED).map((host) => host.replace(/[a-z.]/, (c) => `%${c.charCodeAt(0).toString(16)}`)),
  fc.domain(),
  fc.string({ maxLength: 40 }),
)
const idArb = fc.oneof(
  fc.uuid(),
  fc.constant(ID),
  fc.uuid().map((id) => id.toUpperCase()),
  fc.uuid().map((id) => `${id}/x`),
  fc.uuid().map((id) => id.replace(/-/g, '')),
  fc.uuid().map((id) => `%${id.charCodeAt(0).toString(16)}${id.slice(1)}`),
  fc.string({ maxLength: 50 }),
)
const kindArb = fc.constantFrom('/v3/media/', '/v1/files/', '/v2/media/', '/v3/media//', '/V3/MEDIA/', '/v3/%6dedia/')
const pathArb = fc.oneof(
  fc.tuple(hostArb, kindArb, idArb).map(([host, kind, id]) => `/${host}${kind}${id}`),
  fc.tuple(fc.constantFrom('/media/', '/v3/media/', '/v1/files/'), idArb).map(([prefix, id]) => prefix + id),
  fc.tuple(fc.constantFrom('/', '//', '/./', '/../'), hostArb, kindArb, idArb).map((parts) => parts.join('')),
  fc.tuple(pathArbBase(), fc.string({ maxLength: 30 })).map(([path, query]) => `${path}?${query}`),
)

function pathArbBase(): fc.Arbitrary<string> {
  return fc.tuple(hostArb, kindArb, idArb).map(([host, kind, id]) => `/${host}${kind}${id}`)
}

test('fuzz: no path reaches a host off the list, or any path but /v3/media/<uuid> or /v1/files/<uuid>', () => {
  let reached = 0
  fc.assert(
    fc.property(pathArb, (path) => {
      const decision = decidePath(path, PATHS)
      if (decision.kind !== 'file') return
      reached++
      const { origin, host, path: upstreamPath, id } = decision.target
      assert.ok(PATHS.hosts.has(host) || host === PATHS.base.hostname, `${path} reached ${host}`)
      assert.equal(origin, `https://${host}`, path)
      assert.match(upstreamPath, /^\/(v3\/media|v1\/files)\/[0-9a-f-]{36}$/i, path)
      assert.match(id, UUID, path)
      assert.ok(upstreamPath.endsWith(id))
    }),
    { numRuns: 20_000 },
  )
  assert.ok(reached > 1_000, `the fuzz must also produce paths that are served (${reached})`)
})
