// Proves the signed-link decision (links/signature.ts) and the safe-delivery headers
// (links/safe-delivery.ts) as pure functions: known signatures, every way a link is refused,
// key rotation, a comparison whose time does not depend on which key matched, and which files
// a browser may show in place and which origins may read them.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import {
  canonicalOrigin,
  corsHeaders,
  preflightHeaders,
  safeDeliveryHeaders,
  showsInline,
} from '../src/links/safe-delivery.js'
import { type LinkCheck, LinkVerifier, linkUrl, signLink } from '../src/links/signature.js'

const KEY = 'correct-horse-battery-staple-0123456789'
const OLD_KEY = 'the-previous-link-signing-key-abcdefgh'
const PATH = '/v3/media/1b456509-974c-458b-aafa-45fc48a4d976'
const APPLICATION = 'aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee'
const NOW = 1_767_000_000_500
const EXPIRES = 1_767_000_300
const MAX_TTL = 86_400

function verifier(keys: readonly string[] = [KEY], now = NOW): LinkVerifier {
  return new LinkVerifier({ keys, maxTtlSeconds: MAX_TTL, now: () => now })
}

/** The query of a link, as linkUrl builds it. */
function query(key: string, path: string, expires: number, application?: string): string {
  return linkUrl('http://proxy', path, expires, signLink(key, path, expires, application), application).split(
    '?',
  )[1] as string
}

function reason(check: LinkCheck): string {
  return check.kind === 'invalid' ? check.reason : check.kind
}

test('known signatures (checked against openssl and Python hmac)', () => {
  assert.equal(signLink(KEY, PATH, 1767225600), 'IeOrn7B9sg_R6mTL2UhycOsvdMrK_i0YXmkdTbj-iyE')
  assert.equal(signLink(KEY, PATH, 1767225600, APPLICATION), 'X-Kstm1GJ8_QfBMB3crM78_8dtDsl9KwmGwg_RKWjw8')
  assert.equal(
    signLink(
      KEY,
      '/api-eu.nexmo.com/v1/files/0f5d6e0a-3c2b-4e7a-9d1c-8b7a6f5e4d3c',
      1767225600,
      APPLICATION.toUpperCase(),
    ),
    'cCJRf5fb-JCp0csvdO97cwprXI-Q7g3xfesiVhxLVTA',
  )
  // The key is its UTF-8 bytes.
  assert.equal(
    signLink('clé-secrète-partagée-avec-le-proxy-€-2026', '/media/1b456509-974c-458b-aafa-45fc48a4d976', 4102444800),
    'di7Sjjx5c4vZUK3SmsdvUXCHascu35LBKVoYOiOcTQU',
  )
  assert.equal(signLink(KEY, PATH, 1767225600, ''), signLink(KEY, PATH, 1767225600), 'no application signs as ""')
})

test('linkUrl: application first and only when set, one slash between base and path', () => {
  assert.equal(linkUrl('http://h:8080', PATH, 5, 'sig'), `http://h:8080${PATH}?expires=5&signature=sig`)
  assert.equal(linkUrl('http://h:8080/', PATH, 5, 'sig'), `http://h:8080${PATH}?expires=5&signature=sig`)
  assert.equal(linkUrl(new URL('http://h:8080'), PATH, 5, 'sig'), `http://h:8080${PATH}?expires=5&signature=sig`)
  assert.equal(
    linkUrl('https://example.com/media-proxy/', PATH, 5, 'sig', APPLICATION),
    `https://example.com/media-proxy${PATH}?application=${APPLICATION}&expires=5&signature=sig`,
  )
})

test('a query without link parameters is an ordinary request', () => {
  for (const q of ['', 'download=1', 'Signature=x&Expires=1', 'sig=abc', '&&=&'])
    assert.deepEqual(verifier().verify(PATH, q), { kind: 'none' }, q)
})

test('a valid link: its expiry, and its application lower-cased; other parameters ignored', () => {
  assert.deepEqual(verifier().verify(PATH, query(KEY, PATH, EXPIRES)), { kind: 'valid', expires: EXPIRES })
  assert.deepEqual(verifier().verify(PATH, query(KEY, PATH, EXPIRES, APPLICATION)), {
    kind: 'valid',
    expires: EXPIRES,
    application: APPLICATION,
  })
  // Signed as sent (upper-case), then named the way application ids are everywhere else.
  assert.deepEqual(verifier().verify(PATH, query(KEY, PATH, EXPIRES, APPLICATION.toUpperCase())), {
    kind: 'valid',
    expires: EXPIRES,
    application: APPLICATION,
  })
  const signature = signLink(KEY, PATH, EXPIRES)
  assert.equal(verifier().verify(PATH, `x=1&signature=${signature}&download&expires=${EXPIRES}&y`).kind, 'valid')
  // Percent-encoded as URLSearchParams decodes it: the same parameters any parser sees.
  assert.equal(verifier().verify(PATH, `%65xpires=${EXPIRES}&signature=${signature}`).kind, 'valid')
})

test('malformed: a half link, a duplicate, or a value out of its grammar', () => {
  const signature = signLink(KEY, PATH, EXPIRES)
  const cases = [
    `expires=${EXPIRES}`,
    `signature=${signature}`,
    `application=${APPLICATION}`,
    `application=${APPLICATION}&expires=${EXPIRES}`,
    `expires=${EXPIRES}&expires=${EXPIRES}&signature=${signature}`,
    `expires=${EXPIRES}&signature=${signature}&signature=${signature}`,
    `application=${APPLICATION}&application=${APPLICATION}&expires=${EXPIRES}&signature=${signature}`,
    `expires=&signature=${signature}`,
    `expires=+${EXPIRES}&signature=${signature}`,
    `expires=%2B${EXPIRES}&signature=${signature}`,
    `expires=-${EXPIRES}&signature=${signature}`,
    `expires=0${EXPIRES}&signature=${signature}`,
    `expires=${EXPIRES}.0&signature=${signature}`,
    `expires=1.7e9&signature=${signature}`,
    `expires=0x69562c0c&signature=${signature}`,
    `expires=${' '}${EXPIRES}&signature=${signature}`,
    `expires=1234567890123456&signature=${signature}`,
    `expires=${EXPIRES}&signature=`,
    `expires=${EXPIRES}&signature=${signature}=`,
    `expires=${EXPIRES}&signature=${signature.slice(1)}`,
    `expires=${EXPIRES}&signature=${signature}A`,
    `expires=${EXPIRES}&signature=${Buffer.from(signature, 'base64url').toString('base64').replace(/=+$/, '')}`.replace(
      /[-_]/g,
      '+',
    ),
    `application=&expires=${EXPIRES}&signature=${signature}`,
    `application=not-a-uuid&expires=${EXPIRES}&signature=${signature}`,
    `application={${APPLICATION}}&expires=${EXPIRES}&signature=${signature}`,
  ]
  for (const q of cases) assert.equal(reason(verifier().verify(PATH, q)), 'malformed', q)
})

test('bad-signature: another key, path, expiry or application than the one signed', () => {
  const v = verifier()
  const signature = signLink(KEY, PATH, EXPIRES, APPLICATION)
  const other = '/v3/media/1b456509-974c-458b-aafa-45fc48a4d977'
  const cases: [string, string][] = [
    [PATH, query(OLD_KEY, PATH, EXPIRES)],
    [other, query(KEY, PATH, EXPIRES)],
    [PATH.toUpperCase(), query(KEY, PATH, EXPIRES)],
    [`/api-us.nexmo.com${PATH}`, query(KEY, PATH, EXPIRES)],
    [PATH, `expires=${EXPIRES + 1}&signature=${signLink(KEY, PATH, EXPIRES)}`],
    [PATH, `expires=${EXPIRES}&signature=${signature}`],
    [PATH, `application=${APPLICATION}&expires=${EXPIRES}&signature=${signLink(KEY, PATH, EXPIRES)}`],
    [PATH, `application=${APPLICATION.toUpperCase()}&expires=${EXPIRES}&signature=${signature}`],
  ]
  for (const [path, q] of cases) assert.equal(reason(v.verify(path, q)), 'bad-signature', `${path}?${q}`)
  // Only the exact base64url text: the unused low bits of the last character are not a
  // second spelling of the same signature.
  const good = signLink(KEY, PATH, EXPIRES)
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
  const last = alphabet.indexOf(good.at(-1) as string)
  const twin = good.slice(0, -1) + alphabet[last ^ 1]
  assert.ok(Buffer.from(twin, 'base64url').equals(Buffer.from(good, 'base64url')), 'the same bytes')
  assert.equal(reason(v.verify(PATH, `expires=${EXPIRES}&signature=${twin}`)), 'bad-signature')
  // A forged link learns nothing about time: the signature is checked first.
  assert.equal(reason(v.verify(PATH, `expires=1&signature=${good}`)), 'bad-signature')
})

test('expired at expires*1000 <= now; too-far beyond now + LINK_MAX_TTL_SECONDS', () => {
  const at = (expires: number, now = NOW) => reason(verifier([KEY], now).verify(PATH, query(KEY, PATH, expires)))
  assert.equal(at(1_767_000_000, 1_767_000_000_000), 'expired')
  assert.equal(at(1_767_000_000, 1_767_000_000_001), 'expired')
  assert.equal(at(1_767_000_001, 1_767_000_000_999), 'valid')
  assert.equal(at(0), 'expired')
  // now is ….5 s: the last second a link may name is floor(now) + max TTL.
  assert.equal(at(1_767_000_000 + MAX_TTL), 'valid')
  assert.equal(at(1_767_000_001 + MAX_TTL), 'too-far')
  assert.equal(at(999_999_999_999_999), 'too-far')
})

test('rotation: every key verifies, whichever position it holds', () => {
  const v = verifier(['a-brand-new-link-signing-key-0123456789', OLD_KEY])
  assert.equal(reason(v.verify(PATH, query(OLD_KEY, PATH, EXPIRES))), 'valid')
  assert.equal(reason(v.verify(PATH, query('a-brand-new-link-signing-key-0123456789', PATH, EXPIRES))), 'valid')
  assert.equal(reason(v.verify(PATH, query(KEY, PATH, EXPIRES))), 'bad-signature')
  assert.throws(() => verifier([]), /at least one key/)
})

test('the comparison takes as long whichever key matched, or none', () => {
  // With an early exit, a link signed by the first of 16 keys would verify in a fraction of
  // the time of a forged one.
  const keys = Array.from({ length: 16 }, (_, i) => `link-signing-key-number-${String(i).padStart(2, '0')}-abcdefgh`)
  const v = verifier(keys)
  const queries = {
    first: query(keys[0] as string, PATH, EXPIRES),
    last: query(keys[15] as string, PATH, EXPIRES),
    forged: query(KEY, PATH, EXPIRES),
  }
  assert.equal(reason(v.verify(PATH, queries.first)), 'valid')
  assert.equal(reason(v.verify(PATH, queries.last)), 'valid')
  assert.equal(reason(v.verify(PATH, queries.forged)), 'bad-signature')
  const times: Record<keyof typeof queries, number[]> = { first: [], last: [], forged: [] }
  for (let round = 0; round < 7; round++) {
    for (const name of Object.keys(queries) as (keyof typeof queries)[]) {
      const start = process.hrtime.bigint()
      for (let i = 0; i < 300; i++) v.verify(PATH, queries[name])
      times[name].push(Number(process.hrtime.bigint() - start))
    }
  }
  const median = (values: number[]) => values.sort((a, b) => a - b)[values.length >> 1] as number
  const forged = median(times.forged)
  for (const name of ['first', 'last'] as const) {
    const ratio = median(times[name]) / forged
    assert.ok(ratio > 0.6 && ratio < 1.67, `${name} key / forged: ${ratio.toFixed(2)}`)
  }
})

test('nosniff and a sandboxing CSP on every media response', () => {
  for (const type of ['image/png', 'text/html', undefined]) {
    const headers = safeDeliveryHeaders(type, undefined)
    assert.equal(headers['x-content-type-options'], 'nosniff')
    assert.equal(headers['content-security-policy'], "default-src 'none'; sandbox")
  }
})

test("images (not SVG), audio and video are shown inline with Vonage's Content-Disposition", () => {
  for (const type of ['image/jpeg', 'IMAGE/PNG', 'image/webp', 'audio/ogg; codecs=opus', 'audio/mpeg', 'video/mp4'])
    assert.equal(showsInline(type), true, type)
  assert.deepEqual(safeDeliveryHeaders('image/jpeg', 'inline; filename="photo.jpg"'), {
    'x-content-type-options': 'nosniff',
    'content-security-policy': "default-src 'none'; sandbox",
    'cross-origin-resource-policy': 'same-site',
    'content-disposition': 'inline; filename="photo.jpg"',
  })
  assert.equal(safeDeliveryHeaders('audio/wav', undefined)['content-disposition'], undefined)
  assert.equal(
    safeDeliveryHeaders('video/mp4', 'attachment; filename=v.mp4')['content-disposition'],
    'attachment; filename=v.mp4',
  )
})

test('SVG, HTML and every other type, or none, are downloads that keep their file name', () => {
  const cases: [string | undefined, string | undefined, string][] = [
    ['image/svg+xml', 'inline; filename="a.svg"', 'attachment; filename="a.svg"'],
    ['IMAGE/SVG+XML; charset=utf-8', undefined, 'attachment'],
    ['image/svg', undefined, 'attachment'],
    ['text/html', 'inline; filename="a.html"', 'attachment; filename="a.html"'],
    ['application/xhtml+xml', 'inline', 'attachment'],
    [
      'application/pdf',
      'inline; filename="a.pdf"; filename*=UTF-8\'\'%E2%82%AC.pdf',
      'attachment; filename="a.pdf"; filename*=UTF-8\'\'%E2%82%AC.pdf',
    ],
    ['text/vcard', 'INLINE;FILENAME=card.vcf', 'attachment; filename=card.vcf'],
    [undefined, 'inline; filename="a;b.html"', 'attachment; filename="a;b.html"'],
    ['', 'filename=a.txt', 'attachment; filename=a.txt'],
    ['image/png, text/html', 'inline; size=3; filename=a.txt; creation-date="x"', 'attachment; filename=a.txt'],
    ['image/png garbage', 'inline; foo="x; filename=evil.html"', 'attachment'],
    ['text/plain', 'inline; filename="a\\".txt"; filename="second.txt"', 'attachment; filename="a\\".txt"'],
    ['text/plain', 'inline; filename="unterminated', 'attachment'],
    ['text/plain', '', 'attachment'],
  ]
  for (const [type, disposition, expected] of cases) {
    const headers = safeDeliveryHeaders(type, disposition)
    assert.equal(headers['content-disposition'], expected, `${type} ${disposition}`)
    assert.equal(headers['cross-origin-resource-policy'], 'same-origin', `${type}`)
  }
})

test('CORS: a listed origin gets its own origin back; any other only Vary', () => {
  const allowed = new Set(['https://desk.example.com', 'http://localhost:3000'])
  assert.deepEqual(corsHeaders('https://desk.example.com', allowed), {
    'access-control-allow-origin': 'https://desk.example.com',
    vary: 'Origin',
    'access-control-expose-headers':
      'Content-Range, Content-Length, Accept-Ranges, ETag, Content-Disposition, Cache-Status, X-Request-Id',
  })
  assert.equal(corsHeaders('http://localhost:3000', allowed)['access-control-allow-origin'], 'http://localhost:3000')
  for (const origin of [
    'https://evil.example.com',
    'https://desk.example.com/',
    'HTTPS://DESK.EXAMPLE.COM',
    'https://desk.example.com:443',
    'http://desk.example.com',
    'null',
    undefined,
  ])
    assert.deepEqual(corsHeaders(origin, allowed), { vary: 'Origin' }, origin)
  assert.deepEqual(corsHeaders('null', new Set(['null'])), { vary: 'Origin' }, 'null is never allowed')
  assert.deepEqual(corsHeaders('https://desk.example.com', new Set()), {}, 'no list, no CORS')
})

test('preflight: granted to a listed origin asking for GET or HEAD with the media headers', () => {
  const allowed = new Set(['https://desk.example.com'])
  const vary = 'Origin, Access-Control-Request-Method, Access-Control-Request-Headers'
  assert.deepEqual(preflightHeaders('https://desk.example.com', 'GET', 'range, if-none-match', allowed), {
    'access-control-allow-origin': 'https://desk.example.com',
    vary,
    'access-control-allow-methods': 'GET, HEAD',
    'access-control-allow-headers': 'Range, If-Range, If-None-Match, If-Modified-Since, Vonage-Application-Id',
    'access-control-max-age': '600',
  })
  assert.equal(
    preflightHeaders('https://desk.example.com', 'HEAD', undefined, allowed)['access-control-max-age'],
    '600',
  )
  assert.ok(
    preflightHeaders('https://desk.example.com', 'GET', 'Vonage-Application-Id,If-Range', allowed)[
      'access-control-allow-origin'
    ],
  )
  const refused: [string | undefined, string | undefined, string | undefined][] = [
    ['https://evil.example.com', 'GET', 'range'],
    ['null', 'GET', undefined],
    [undefined, 'GET', undefined],
    ['https://desk.example.com', 'POST', undefined],
    ['https://desk.example.com', 'get', undefined],
    ['https://desk.example.com', undefined, undefined],
    ['https://desk.example.com', 'GET', 'authorization'],
    ['https://desk.example.com', 'GET', 'range, x-custom'],
  ]
  for (const [origin, method, headers] of refused)
    assert.deepEqual(preflightHeaders(origin, method, headers, allowed), { vary }, `${origin} ${method} ${headers}`)
  assert.deepEqual(preflightHeaders('https://desk.example.com', 'GET', undefined, new Set()), {})
})

test('canonicalOrigin: an http(s) origin alone, in the form browsers send it', () => {
  assert.equal(canonicalOrigin('https://Desk.Example.com/'), 'https://desk.example.com')
  assert.equal(canonicalOrigin('http://localhost:3000'), 'http://localhost:3000')
  assert.equal(canonicalOrigin('https://desk.example.com:443'), 'https://desk.example.com')
  for (const text of [
    '*',
    'null',
    'desk.example.com',
    'https://*.example.com',
    'ftp://desk.example.com',
    'https://desk.example.com/app',
    'https://desk.example.com?x',
    'https://desk.example.com#x',
    'https://user@desk.example.com',
  ])
    assert.equal(canonicalOrigin(text), undefined, text)
})
