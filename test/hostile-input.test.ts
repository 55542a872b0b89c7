// Proves hostile input cannot break the media port: 10,000 generated raw requests get well-formed, non-5xx answers, and only GET/HEAD /v3/media/<uuid> reaches the emulator.
import assert from 'node:assert/strict'
import net from 'node:net'
import { type TestContext, test } from 'node:test'
import fc from 'fast-check'
import { request } from 'undici'
import type { RecordedRequest } from '../src/emulator/emulator.js'
import { syntheticByte } from '../src/emulator/media-store.js'
import { type RunningProxy, startEmulator, startProxy, waitFor } from './helpers.js'

const CLIENT_KEY = 'fuzz-client-key-4f9a2c71'
const KNOWN_IDS = [
  '1b456509-974c-458b-aafa-45fc48a4d976',
  '0f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a',
  'abcdef01-2345-4678-9abc-def012345678',
]
const KNOWN_SIZE = 100
/** Node counts the request target plus every header name and value against this limit. */
const HEADER_LIMIT = 16 * 1024
const HEADER_LIMIT_MARGIN = 512
const BATCH = 25
const CONNECTIONS = 5
const RUNS = 400
const EXCHANGE_TIMEOUT_MS = 5_000

const UUID_PATH = /^\/v3\/media\/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/i
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/
const FORWARDED_HEADERS = new Set([
  'host',
  'connection',
  'authorization',
  'x-request-id',
  'range',
  'if-range',
  'if-none-match',
  'if-modified-since',
  'accept',
])

// What a generated request is made of.

interface BodyMode {
  headers: [string, string][]
  body: string
  /** Broken only after the headers: Node may answer the request, then reject the body and close. */
  brokenBody?: true
}

interface Spec {
  method: string
  target: string
  version: string
  /** Host header values; undefined means the one a client would send. */
  hosts: string[] | undefined
  authorizations: string[]
  extra: [string, string][]
  body: BodyMode
  /** Built only from well-behaved parts: must be served as a plain 200. */
  clean: boolean
}

const uuidArb = fc.oneof(
  fc.constantFrom(...KNOWN_IDS),
  fc.constantFrom(...KNOWN_IDS).map((id) => id.toUpperCase()),
  fc.uuid(),
)

const PREFIXES = ['/media/', '/v3/media/']
const HOSTILE_PREFIXES = [
  '/MEDIA/',
  '/V3/Media/',
  '//media/',
  '/media//',
  '/./media/',
  '/x/../media/',
  '/v3/../media/',
  '/v3/media/../media/',
  '/media/./',
  '/media/../v3/media/',
  '/%6dedia/',
  '/media%2f',
  '/media%2F',
  '/v3%2fmedia/',
  '/v3%252fmedia/',
  '/media/%2e%2e/',
  '/media/..%2f',
  '/media/%2e%2e%2f',
  '/media/%252e%252e%252f',
  '/v3/media/..;/',
  '/media;/',
  '/media%00/',
  '/media/%00/',
  '/v3\\media\\',
  '/media\\',
  '\\media\\',
  '/v2/media/',
  '/v3/media/v3/media/',
  '/admin/../media/',
  '/metrics/../media/',
  'media/',
  'http://127.0.0.1/media/',
  'http://evil.example/v3/media/',
  '//evil.example/v3/media/',
  '',
]
const SUFFIXES = [
  '/',
  '//',
  '/..',
  '/../',
  '/./',
  '/.',
  '%2f',
  '%2F',
  '%2f..',
  '%2F..%2F',
  '%2e',
  '%2e%2e',
  '%252f',
  '%252e%252e%252f',
  '%5c',
  '%5c..',
  '\\',
  '\\..',
  '%00',
  '%2500',
  '%0d%0aSet-Cookie:%20x=1',
  '%0a',
  '%20',
  '+',
  '%',
  '%z',
  '%c0%af',
  '%e2%80%8b',
  '%ef%bc%8f',
  '%ff',
  '.json',
  '.',
  '..',
  ';',
  ';a=b',
  '/x',
  '0',
  'g',
  '-0000',
  '~',
  '*',
  ':',
  '@',
  '$',
  '!',
  "'",
  '(',
  ',',
  'é',
  '\u202e',
]
const TAILS = ['', '?', '?x=1', '?x=%00', '?id=../../etc', `?key=${CLIENT_KEY}`, '#', '#frag', '?a=1#b']

const hexString = (min: number, max: number) =>
  fc.string({ unit: fc.constantFrom(...'0123456789abcdef-'), minLength: min, maxLength: max })

const percentEncode = (text: string, prefix = '%') =>
  [...Buffer.from(text)].map((byte) => prefix + byte.toString(16).padStart(2, '0')).join('')

const idArb: fc.Arbitrary<string> = fc.oneof(
  { weight: 6, arbitrary: uuidArb },
  { weight: 4, arbitrary: fc.tuple(uuidArb, fc.constantFrom(...SUFFIXES)).map(([id, suffix]) => id + suffix) },
  { weight: 1, arbitrary: fc.tuple(fc.constantFrom(...SUFFIXES), uuidArb).map(([prefix, id]) => prefix + id) },
  {
    weight: 1,
    arbitrary: fc
      .tuple(uuidArb, fc.constantFrom(...SUFFIXES), fc.constantFrom(...SUFFIXES), uuidArb)
      .map((parts) => parts.join('')),
  },
  { weight: 1, arbitrary: hexString(37, 4000) },
  { weight: 1, arbitrary: hexString(0, 36) },
  {
    weight: 2,
    arbitrary: fc.tuple(uuidArb, fc.nat()).map(([id, n]) => {
      const variants = [
        id.replaceAll('-', ''),
        `${id}-0000`,
        `${id.slice(0, 9)}${id.slice(10)}-`,
        id.replaceAll('-', '%2d'),
        id.replaceAll('-', '%252d'),
        percentEncode(id),
        percentEncode(id, '%25'),
        id.replace('1', '\uff11'),
        id.replace('a', '\u0430'),
        percentEncode(id.replace('a', '\u0430')),
        `${id}\u0000`,
        ` ${id}`,
        `${id} HTTP/1.1\r\nX-Smuggled: 1`,
        `${id}\t`,
      ]
      return variants[n % variants.length] as string
    }),
  },
  { weight: 1, arbitrary: fc.string({ unit: 'grapheme-ascii', maxLength: 60 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 30 }) },
)

const targetArb: fc.Arbitrary<{ target: string; cleanPath: boolean }> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc
      .tuple(fc.constantFrom(...PREFIXES), fc.constantFrom(...KNOWN_IDS))
      .map(([prefix, id]) => ({ target: prefix + id, cleanPath: true })),
  },
  {
    weight: 10,
    arbitrary: fc
      .tuple(fc.constantFrom(...PREFIXES), idArb, fc.constantFrom(...TAILS))
      .map(([prefix, id, tail]) => ({ target: prefix + id + tail, cleanPath: false })),
  },
  {
    weight: 4,
    arbitrary: fc
      .tuple(fc.constantFrom(...HOSTILE_PREFIXES), idArb, fc.constantFrom(...TAILS))
      .map(([prefix, id, tail]) => ({ target: prefix + id + tail, cleanPath: false })),
  },
  {
    weight: 1,
    arbitrary: fc
      .constantFrom(
        '*',
        '/',
        '/media',
        '/media/',
        '/v3/media',
        '/v3/media/',
        '/v3',
        '/metrics',
        '/healthz',
        '/readyz',
        '/quitquitquit',
        '127.0.0.1:443',
        `/v3/media/${KNOWN_IDS[0]}/../../../metrics`,
      )
      .map((target) => ({ target, cleanPath: false })),
  },
)

const METHODS = ['GET', 'HEAD']
const OTHER_METHODS = [
  'POST',
  'PUT',
  'DELETE',
  'OPTIONS',
  'PATCH',
  'TRACE',
  'CONNECT',
  'PROPFIND',
  'PROPPATCH',
  'MKCOL',
  'COPY',
  'MOVE',
  'LOCK',
  'UNLOCK',
  'SEARCH',
  'PURGE',
  'REPORT',
  'MERGE',
  'M-SEARCH',
  'NOTIFY',
  'SUBSCRIBE',
  'ACL',
  'BIND',
  'LINK',
  'SOURCE',
  'QUERY',
  'PRI',
]
const ODD_METHODS = ['get', 'Get', 'head', 'GETT', 'GE', 'FOO', 'BREW', 'HEAD ', 'GET\t', 'GET\u0000', '', '-', 'GÉT']
const methodArb = fc.oneof(
  { weight: 12, arbitrary: fc.constantFrom(...METHODS) },
  { weight: 3, arbitrary: fc.constantFrom(...OTHER_METHODS) },
  { weight: 1, arbitrary: fc.constantFrom(...ODD_METHODS) },
  { weight: 1, arbitrary: fc.string({ unit: fc.constantFrom(...'ABCDEFGHIJKLMNOPQRSTUVWXYZ_-'), maxLength: 12 }) },
)

const versionArb: fc.Arbitrary<string> = fc.oneof(
  { weight: 20, arbitrary: fc.constant('HTTP/1.1') },
  {
    weight: 1,
    arbitrary: fc.constantFrom('HTTP/1.0', 'HTTP/2.0', 'HTTP/0.9', 'HTTP/1.2', 'http/1.1', 'HTTP/11', 'RTSP/1.0', ''),
  },
)

const hostsArb: fc.Arbitrary<string[] | undefined> = fc.oneof(
  { weight: 15, arbitrary: fc.constant(undefined) },
  {
    weight: 1,
    arbitrary: fc.constantFrom<string[]>(
      [],
      ['evil.example'],
      [''],
      ['127.0.0.1:1'],
      ['a b'],
      ['evil.example', 'evil2.example'],
    ),
  },
)

const authorizationsArb: fc.Arbitrary<string[]> = fc.oneof(
  { weight: 10, arbitrary: fc.constant<string[]>([`Bearer ${CLIENT_KEY}`]) },
  {
    weight: 3,
    arbitrary: fc.constantFrom<string[]>(
      [],
      ['Bearer not-the-key'],
      [`bearer ${CLIENT_KEY}`],
      [`Basic ${Buffer.from(`u:${CLIENT_KEY}`).toString('base64')}`],
      [`Bearer ${CLIENT_KEY}x`],
      [`Bearer ${CLIENT_KEY.slice(0, -1)}`],
      [`Bearer ${CLIENT_KEY}`, 'Bearer not-the-key'],
      ['Bearer not-the-key', `Bearer ${CLIENT_KEY}`],
      [`Bearer ${CLIENT_KEY}, Bearer not-the-key`],
      [`Bearer\t${CLIENT_KEY}`],
      [CLIENT_KEY],
      [`Bearer ${CLIENT_KEY}\r\nX-Evil: 1`],
      [`Bearer ${'k'.repeat(9000)}`],
    ),
  },
)

const FIXED_HEADERS: [string, string][] = [
  ['Cookie', 'session=s3cret-cookie'],
  ['X-Forwarded-For', '10.0.0.1'],
  ['Forwarded', 'for=10.0.0.1;host=evil.example'],
  ['X-Forwarded-Host', 'evil.example'],
  ['X-Original-URL', '/metrics'],
  ['X-Rewrite-URL', '/v3/media/../../admin'],
  ['X-HTTP-Method-Override', 'DELETE'],
  ['Connection', 'close'],
  ['Connection', 'keep-alive'],
  ['Connection', 'x-request-id, authorization'],
  ['Connection', 'upgrade'],
  ['Upgrade', 'websocket'],
  ['Upgrade', 'h2c'],
  ['Range', 'bytes=0-9'],
  ['Range', 'bytes=-5'],
  ['Range', 'bytes=5-2'],
  ['Range', 'bytes=0-0,2-3'],
  ['Range', 'bytes=99999-'],
  ['Range', 'items=0-1'],
  ['Range', 'bytes=0-9\u00e9'],
  ['If-None-Match', '*'],
  ['If-None-Match', 'W/"x", "y"'],
  ['If-Modified-Since', 'Thu, 01 Jan 2099 00:00:00 GMT'],
  ['If-Modified-Since', 'not a date'],
  ['If-Range', '"x"'],
  ['Accept', '*/*'],
  ['Accept', '\u00ff\u00fe'],
  ['X-Request-Id', 'has spaces'],
  ['X-Request-Id', 'x'.repeat(129)],
  ['X-Request-Id', '../../etc/passwd'],
  ['X-Request-Id', '{"$ne":1}'],
  ['X-Request-Id', '\u00e9t\u00e9'],
  ['User-Agent', '\u00ff\u00fe\u00fd'],
  ['Content-Type', 'application/json'],
  ['TE', 'trailers'],
  ['Keep-Alive', 'timeout=1'],
  ['Proxy-Authorization', 'Basic eDp5'],
  ['Max-Forwards', '0'],
  ['Via', '1.1 evil'],
  ['Expect', 'something-else'],
  // CR/LF and other control characters where a client library would never put them.
  ['X-Injected', 'a\r\nX-Evil: 1'],
  ['X-Injected', 'a\rb'],
  ['X-Injected', 'a\nb'],
  ['X-Injected', 'a\nX-Evil: 1'],
  ['X-Injected', 'a\u0000b'],
  ['X-Injected', 'a\r\n b'],
  ['X-Injected', 'a\u007fb'],
  ['X-Injected', '%0d%0aX-Evil:%201'],
  ['X Bad', 'v'],
  ['X\tBad', 'v'],
  ['', 'v'],
  [':authority', 'evil.example'],
  ['X-\u00dc', 'v'],
  ['X-Bad ', 'v'],
]

const headersArb: fc.Arbitrary<[string, string][]> = fc
  .array(
    fc.oneof(
      { weight: 8, arbitrary: fc.constantFrom(...FIXED_HEADERS).map((header) => [header]) },
      {
        weight: 2,
        arbitrary: fc
          .oneof(fc.nat(2_000), fc.integer({ min: 15_500, max: 17_500 }), fc.integer({ min: 17_500, max: 40_000 }))
          .map((size): [string, string][] => [['X-Huge', 'h'.repeat(size)]]),
      },
      {
        weight: 1,
        arbitrary: fc
          .integer({ min: 2, max: 4_000 })
          .map((count) => Array.from({ length: count }, (): [string, string] => ['X-Dup', 'd'])),
      },
      {
        weight: 1,
        arbitrary: fc
          .tuple(
            fc.string({ unit: fc.constantFrom(...'abcdefghijklmnopqrstuvwxyz-_.~!'), minLength: 1, maxLength: 20 }),
            fc.string({ unit: 'grapheme-ascii', maxLength: 40 }),
          )
          .map(([name, value]): [string, string][] => [[`X-${name}`, value]]),
      },
    ),
    { maxLength: 4 },
  )
  .map((groups) => groups.flat())

const BODY_MODES: BodyMode[] = [
  { headers: [], body: '' },
  { headers: [['Content-Length', '0']], body: '' },
  { headers: [['Content-Length', '5']], body: 'hello' },
  { headers: [['Transfer-Encoding', 'chunked']], body: '5\r\nhello\r\n0\r\n\r\n' },
  { headers: [['Transfer-Encoding', 'gzip, chunked']], body: '0\r\n\r\n' },
  {
    headers: [
      ['Transfer-Encoding', 'chunked'],
      ['Content-Length', '5'],
    ],
    body: '0\r\n\r\n',
  },
  {
    headers: [
      ['Content-Length', '5'],
      ['Content-Length', '0'],
    ],
    body: 'hello',
  },
  { headers: [['Content-Length', 'abc']], body: '' },
  { headers: [['Content-Length', '-1']], body: '' },
  { headers: [['Transfer-Encoding', 'chunked']], body: 'zz\r\nhello\r\n0\r\n\r\n', brokenBody: true },
  {
    headers: [
      ['Expect', '100-continue'],
      ['Content-Length', '5'],
    ],
    body: 'hello',
  },
]
const bodyArb = fc.oneof(
  { weight: 12, arbitrary: fc.constant(BODY_MODES[0] as BodyMode) },
  { weight: 2, arbitrary: fc.constantFrom(...BODY_MODES) },
)

const specArb: fc.Arbitrary<Spec> = fc
  .record({
    method: methodArb,
    target: targetArb,
    version: versionArb,
    hosts: hostsArb,
    authorizations: authorizationsArb,
    extra: fc.oneof(
      { weight: 1, arbitrary: fc.constant<[string, string][]>([]) },
      { weight: 2, arbitrary: headersArb },
    ),
    body: bodyArb,
  })
  .map(({ target, ...parts }) => ({
    ...parts,
    target: target.target,
    clean:
      target.cleanPath &&
      METHODS.includes(parts.method) &&
      parts.version === 'HTTP/1.1' &&
      parts.hosts === undefined &&
      parts.authorizations.length === 1 &&
      parts.authorizations[0] === `Bearer ${CLIENT_KEY}` &&
      parts.extra.length === 0 &&
      parts.body === BODY_MODES[0],
  }))

function encode(spec: Spec, port: number): { bytes: Buffer; headerBytes: number } {
  const headers: [string, string][] = [
    ...(spec.hosts ?? [`127.0.0.1:${port}`]).map((host): [string, string] => ['Host', host]),
    ...spec.authorizations.map((value): [string, string] => ['Authorization', value]),
    ...spec.extra,
    ...spec.body.headers,
  ]
  const head = [`${spec.method} ${spec.target} ${spec.version}`, ...headers.map(([name, value]) => `${name}: ${value}`)]
  // Without headers, 'PRI … \r\n\r\n' is the start of the HTTP/2 preface: send the rest of it,
  // or Node's parser (rightly) waits for it.
  const preface = spec.method === 'PRI' && headers.length === 0 ? 'SM\r\n\r\n' : ''
  const bytes = Buffer.from(`${head.join('\r\n')}\r\n\r\n${spec.body.body}${preface}`)
  // What Node's parser counts against its header limit (the target and each name and value).
  const headerBytes =
    Buffer.byteLength(spec.target) +
    headers.reduce((sum, [name, value]) => sum + Buffer.byteLength(name) + Buffer.byteLength(value), 0)
  return { bytes, headerBytes }
}

// A raw HTTP/1.1 client: sends bytes as they are and checks the response is well-formed.

interface RawResponse {
  status: number
  headers: Map<string, string[]>
  body: Buffer
}

interface Outcome {
  response: RawResponse | undefined
  /** The server closed the connection after this response. */
  closedAfter: boolean
  /** A protocol violation, a hang or a connection dropped without an answer. */
  error: string | undefined
}

type Parsed = { response: RawResponse; used: number } | { incomplete: true } | { malformed: string }

function header(response: RawResponse, name: string): string | undefined {
  return response.headers.get(name)?.join(', ')
}

function hasControlCharacter(text: string): boolean {
  for (const char of text) {
    const code = char.charCodeAt(0)
    if ((code < 0x20 && char !== '\t') || code === 0x7f) return true
  }
  return false
}

function parseResponse(buffer: Buffer, isHead: boolean, ended: boolean): Parsed {
  const headEnd = buffer.indexOf('\r\n\r\n')
  if (headEnd === -1)
    return buffer.length > 64 * 1024 ? { malformed: 'response head over 64 KiB' } : { incomplete: true }
  const [statusLine = '', ...lines] = buffer.subarray(0, headEnd).toString('latin1').split('\r\n')
  const status = /^HTTP\/1\.1 ([1-5]\d\d) ([^\r\n]*)$/.exec(statusLine)
  if (!status || hasControlCharacter(statusLine)) return { malformed: `status line ${JSON.stringify(statusLine)}` }
  const headers = new Map<string, string[]>()
  for (const line of lines) {
    const colon = line.indexOf(':')
    const name = line.slice(0, colon)
    const value = line.slice(colon + 1).trim()
    if (colon <= 0 || !TOKEN.test(name) || hasControlCharacter(value)) {
      return { malformed: `header line ${JSON.stringify(line)}` }
    }
    headers.set(name.toLowerCase(), [...(headers.get(name.toLowerCase()) ?? []), value])
  }
  const code = Number(status[1])
  const response: RawResponse = { status: code, headers, body: Buffer.alloc(0) }
  const start = headEnd + 4
  if (isHead || code < 200 || code === 204 || code === 304) return { response, used: start }

  const transferEncoding = header(response, 'transfer-encoding')
  const contentLength = header(response, 'content-length')
  if (transferEncoding !== undefined) {
    if (transferEncoding !== 'chunked' || contentLength !== undefined) {
      return { malformed: `transfer-encoding ${transferEncoding} with content-length ${contentLength}` }
    }
    const chunks: Buffer[] = []
    let at = start
    for (;;) {
      const lineEnd = buffer.indexOf('\r\n', at)
      if (lineEnd === -1) return { incomplete: true }
      const sizeLine = buffer.subarray(at, lineEnd).toString('latin1')
      if (!/^[0-9a-fA-F]{1,8}$/.test(sizeLine)) return { malformed: `chunk size ${JSON.stringify(sizeLine)}` }
      const size = Number.parseInt(sizeLine, 16)
      if (buffer.length < lineEnd + 2 + size + 2) return { incomplete: true }
      if (buffer.subarray(lineEnd + 2 + size, lineEnd + 4 + size).toString('latin1') !== '\r\n') {
        return { malformed: 'chunk not followed by CRLF' }
      }
      if (size === 0) return { response: { ...response, body: Buffer.concat(chunks) }, used: lineEnd + 4 }
      chunks.push(buffer.subarray(lineEnd + 2, lineEnd + 2 + size))
      at = lineEnd + 4 + size
    }
  }
  if (contentLength !== undefined) {
    if (!/^\d{1,15}$/.test(contentLength)) return { malformed: `content-length ${contentLength}` }
    const end = start + Number(contentLength)
    if (buffer.length < end) return { incomplete: true }
    return { response: { ...response, body: buffer.subarray(start, end) }, used: end }
  }
  if (!ended) return { incomplete: true }
  return { response: { ...response, body: buffer.subarray(start) }, used: buffer.length }
}

class RawConnection {
  readonly #port: number
  #socket: net.Socket | undefined
  #buffer = Buffer.alloc(0)
  #ended = true
  #wake: (() => void) | undefined

  constructor(port: number) {
    this.#port = port
  }

  /**
   * Sends one request and reads its answer. `brokenBody`: the body is malformed, so Node may
   * answer the request before reading its body, then reject the body with a 400 and close.
   */
  async exchange(bytes: Buffer, isHead: boolean, brokenBody = false): Promise<Outcome> {
    if (this.#ended) await this.#connect()
    const socket = this.#socket as net.Socket
    const deadline = Date.now() + EXCHANGE_TIMEOUT_MS
    socket.write(bytes)
    for (;;) {
      const parsed = parseResponse(this.#buffer, isHead, this.#ended)
      if ('malformed' in parsed) {
        this.close()
        return { response: undefined, closedAfter: true, error: `malformed response: ${parsed.malformed}` }
      }
      if ('response' in parsed) {
        this.#buffer = this.#buffer.subarray(parsed.used)
        const { response } = parsed
        if (response.status < 200) continue // 100 Continue, then the real answer
        // Node's HTTP layer always says keep-alive or close; an answer written straight to the
        // socket without either (a parser rejection) is followed by a close too.
        const closing = !/\bkeep-alive\b/i.test(header(response, 'connection') ?? '')
        if (brokenBody && !closing) {
          // Node may still reject the body with a 400 and close: that belongs to this request, so
          // the connection is not reused.
          const closedAfter = this.#ended
          this.close()
          return { response, closedAfter, error: undefined }
        }
        while (closing && !this.#ended && (await this.#changed(deadline))) {}
        // (A parser rejection of a HEAD request carries a body; the close makes that harmless.)
        if (this.#buffer.length > 0 && !closing) {
          const extra = this.#buffer.toString('latin1').slice(0, 200)
          this.close()
          return {
            response,
            closedAfter: true,
            error: `unsolicited bytes after the response: ${JSON.stringify(extra)}`,
          }
        }
        if (closing && !this.#ended) {
          this.close()
          return { response, closedAfter: false, error: 'the server announced a close but kept the connection' }
        }
        return { response, closedAfter: this.#ended, error: undefined }
      }
      if (this.#ended) {
        const error = this.#buffer.length
          ? `connection closed mid-response after ${JSON.stringify(this.#buffer.toString('latin1').slice(0, 200))}`
          : 'connection closed without any response'
        this.close()
        return { response: undefined, closedAfter: true, error }
      }
      if (!(await this.#changed(deadline))) {
        this.close()
        return { response: undefined, closedAfter: false, error: `no response within ${EXCHANGE_TIMEOUT_MS} ms` }
      }
    }
  }

  close(): void {
    this.#socket?.destroy()
    this.#ended = true
    this.#buffer = Buffer.alloc(0)
  }

  async #connect(): Promise<void> {
    this.#buffer = Buffer.alloc(0)
    const socket = net.connect(this.#port, '127.0.0.1')
    this.#socket = socket
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve)
      socket.once('error', reject)
    })
    this.#ended = false
    const ended = () => {
      if (socket !== this.#socket) return
      this.#ended = true
      this.#wake?.()
    }
    socket.on('data', (chunk: Buffer) => {
      if (socket !== this.#socket) return
      this.#buffer = Buffer.concat([this.#buffer, chunk])
      this.#wake?.()
    })
    // A reset after the answer arrived is fine; one before it shows up as "closed without response".
    socket.on('error', ended)
    socket.on('end', ended)
    socket.on('close', ended)
  }

  /** Resolves true on new data or the end of the connection, false at the deadline. */
  #changed(deadline: number): Promise<boolean> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), Math.max(0, deadline - Date.now()))
      this.#wake = () => {
        clearTimeout(timer)
        this.#wake = undefined
        resolve(true)
      }
    })
  }
}

// The invariants.

interface Exchange {
  spec: Spec
  raw: Buffer
  headerBytes: number
  outcome: Outcome
}

function describe(exchange: Exchange): string {
  const raw = exchange.raw.toString('latin1')
  const shown = raw.length > 600 ? `${raw.slice(0, 600)}... (${raw.length} bytes)` : raw
  const { response } = exchange.outcome
  const answer = response
    ? `${response.status} ${JSON.stringify(Object.fromEntries(response.headers))} ${response.body.toString('latin1').slice(0, 300)}`
    : 'no response'
  return `request ${JSON.stringify(shown)}\n  answer: ${answer}`
}

/** Node's parser tolerates a second space after the method: 'HEAD ' is a HEAD. */
function isHead(spec: Spec): boolean {
  return spec.method.trim() === 'HEAD'
}

/** Whether the first Authorization line (the one Node keeps) carries the client key. */
function presentsKey(spec: Spec): boolean {
  const first = spec.authorizations[0]?.split('\r\n')[0]
  return first !== undefined && new RegExp(`^bearer ${CLIENT_KEY}$`, 'i').test(first.trim())
}

/** Single percent-decoding, tolerant of malformed escapes (as a router would see the id). */
function decodeOnce(text: string): string {
  return text.replace(/%([0-9a-f]{2})/gi, (_, hex: string) => String.fromCharCode(Number.parseInt(hex, 16)))
}

function clientViolations(exchange: Exchange, passthrough: boolean): string[] {
  const { spec, outcome } = exchange
  const problems: string[] = []
  if (outcome.error) problems.push(outcome.error)
  const response = outcome.response
  if (!response) return problems
  const { status } = response
  const requestId = header(response, 'x-request-id')
  const contentType = header(response, 'content-type') ?? ''
  const isProblem = contentType.startsWith('application/problem+json')

  if (status >= 500) problems.push(`answered ${status}`)
  if (
    outcome.closedAfter &&
    !spec.body.brokenBody &&
    !/\bclose\b/i.test(header(response, 'connection') ?? '') &&
    status !== 400 &&
    status !== 431
  )
    problems.push(`connection dropped after a ${status} that did not announce it`)
  if (response.headers.has('set-cookie')) problems.push('an upstream Set-Cookie reached the client')
  if (header(response, 'server') === 'vonage-emulator') problems.push('the upstream Server header reached the client')
  const wwwAuthenticate = header(response, 'www-authenticate')
  if (wwwAuthenticate !== undefined && !(status === 401 && /^Bearer/.test(wwwAuthenticate)))
    problems.push(`WWW-Authenticate ${wwwAuthenticate} on a ${status}`)

  // Answers from Node's HTTP layer itself (a request it could not parse, or an Expect it
  // does not support) come without a request id; everything the proxy answers has one.
  const fromHttpLayer = !isProblem && requestId === undefined && [400, 417, 431].includes(status)
  if (!fromHttpLayer) {
    if (requestId === undefined) problems.push(`no X-Request-Id on a ${status}`)
    else if (!REQUEST_ID.test(requestId)) problems.push(`unsafe X-Request-Id ${JSON.stringify(requestId)}`)
  }
  if (!fromHttpLayer && !passthrough && status >= 400) {
    if (!isProblem) problems.push(`a ${status} from the proxy is ${contentType || 'untyped'}, not problem+json`)
    else if (!isHead(spec)) {
      try {
        const problem = JSON.parse(response.body.toString('utf8')) as Record<string, unknown>
        const keys = Object.keys(problem).sort().join(',')
        if (keys !== 'detail,requestId,status,title,type') problems.push(`problem fields ${keys}`)
        if (problem.status !== status) problems.push(`problem status ${problem.status} on a ${status}`)
        if (problem.requestId !== requestId) problems.push('problem requestId differs from X-Request-Id')
      } catch {
        problems.push('problem+json body is not JSON')
      }
    }
  }

  if (exchange.headerBytes > HEADER_LIMIT + HEADER_LIMIT_MARGIN && status !== 431 && status !== 400)
    problems.push(`${exchange.headerBytes} header bytes answered ${status}, not 431`)
  if (status === 431 && exchange.headerBytes < HEADER_LIMIT - HEADER_LIMIT_MARGIN)
    problems.push(`431 for only ${exchange.headerBytes} header bytes`)

  if (spec.clean) {
    const expectedBody = isHead(spec) ? 0 : KNOWN_SIZE
    if (status !== 200) problems.push(`a well-formed request for a known id got ${status}`)
    else if (header(response, 'content-length') !== String(KNOWN_SIZE)) problems.push('wrong content-length')
    else if (response.body.length !== expectedBody || response.body.some((byte, i) => byte !== syntheticByte(i)))
      problems.push('wrong body')
  }
  return problems
}

/** Why `spec` could not be the client request behind what the emulator got; empty if it could. */
function sourceMismatches(spec: Spec, seen: RecordedRequest, id: string | undefined): string[] {
  const mismatches: string[] = []
  if (spec.method.trim() !== seen.method) mismatches.push(`for a ${JSON.stringify(spec.method)} request`)
  if (!presentsKey(spec)) mismatches.push('for a request without the client key')
  if (id && !spec.target.includes(id) && !decodeOnce(spec.target).includes(id))
    mismatches.push(`id not in the request target ${JSON.stringify(spec.target.slice(0, 200))}`)
  return mismatches
}

function upstreamViolations(seen: RecordedRequest, byRequestId: Map<string, Exchange>, sent: Exchange[]): string[] {
  const problems: string[] = []
  const what = `emulator got ${seen.method} ${JSON.stringify(seen.url)}`
  const id = UUID_PATH.exec(seen.url)?.[1]
  if (seen.method !== 'GET' && seen.method !== 'HEAD') problems.push(`${what}: method`)
  if (!id) problems.push(`${what}: not /v3/media/<uuid>`)
  for (const name of Object.keys(seen.headers))
    if (!FORWARDED_HEADERS.has(name)) problems.push(`${what}: forwarded header ${name}`)
  if (seen.jti === undefined) problems.push(`${what}: without a valid application JWT`)
  if (JSON.stringify(seen.headers).includes(CLIENT_KEY)) problems.push(`${what}: carries the client key`)

  const requestId = seen.headers['x-request-id']
  const exchange = typeof requestId === 'string' ? byRequestId.get(requestId) : undefined
  if (!exchange) {
    // Node dispatches a request once its headers parse; if its body then turns out broken, the
    // client gets Node's 400 instead of the proxy's answer, whose request id it never sees (and
    // the upstream request may land after that 400, so in a later batch).
    const source = sent.find(
      (candidate) => candidate.spec.body.brokenBody && sourceMismatches(candidate.spec, seen, id).length === 0,
    )
    return source ? problems : [...problems, `${what}: no client response carries its request id ${requestId}`]
  }
  problems.push(...sourceMismatches(exchange.spec, seen, id).map((mismatch) => `${what}: ${mismatch}`))
  const status = exchange.outcome.response?.status
  if (status === undefined || ![200, 206, 304, 404, 416].includes(status))
    problems.push(`${what}: the client got ${status} for it`)
  return problems.map((problem) => `${problem}\n  ${describe(exchange)}`)
}

async function startFuzzTarget(t: TestContext) {
  const emulator = await startEmulator(t)
  for (const id of KNOWN_IDS) emulator.media.addSynthetic(id, KNOWN_SIZE)
  const proxy = await startProxy(t, emulator.url, { INBOUND_API_KEYS: CLIENT_KEY, LOG_LEVEL: 'warn' })
  return { emulator, proxy, port: Number(new URL(proxy.mediaUrl).port) }
}

async function assertStillServing(proxy: RunningProxy): Promise<void> {
  const res = await request(`${proxy.mediaUrl}/media/${KNOWN_IDS[0]}`, {
    headers: { authorization: `Bearer ${CLIENT_KEY}` },
  })
  const body = Buffer.from(await res.body.arrayBuffer())
  assert.equal(res.statusCode, 200)
  assert.equal(body.length, KNOWN_SIZE)
  const health = await request(`${proxy.adminUrl}/healthz`)
  await health.body.dump()
  assert.equal(health.statusCode, 200)
  await waitFor(() => proxy.app.inFlight.count === 0, 'in-flight count back to 0')
}

test('10,000 generated hostile requests: no crash, no 5xx, well-formed answers, only GET/HEAD /v3/media/<uuid> upstream', {
  timeout: 120_000,
}, async (t) => {
  const { emulator, proxy, port } = await startFuzzTarget(t)
  const byRequestId = new Map<string, Exchange>()
  const all: Exchange[] = []
  let sent = 0

  const batchHolds = async (specs: Spec[]): Promise<boolean> => {
    const before = emulator.requests.length
    const exchanges: Exchange[] = []
    const connections = Array.from({ length: CONNECTIONS }, () => new RawConnection(port))
    try {
      // Each connection sends its share one after another, keeping the connection alive.
      await Promise.all(
        connections.map(async (connection, c) => {
          for (let i = c; i < specs.length; i += CONNECTIONS) {
            const spec = specs[i] as Spec
            const { bytes, headerBytes } = encode(spec, port)
            const outcome = await connection.exchange(bytes, isHead(spec), spec.body.brokenBody)
            sent++
            exchanges[i] = { spec, raw: bytes, headerBytes, outcome }
          }
        }),
      )
    } finally {
      for (const connection of connections) connection.close()
    }
    all.push(...exchanges)
    const seen = emulator.requests.slice(before)
    const upstreamIds = new Set(seen.map((record) => record.headers['x-request-id']))
    for (const exchange of exchanges) {
      const requestId = exchange.outcome.response && header(exchange.outcome.response, 'x-request-id')
      if (requestId) byRequestId.set(requestId, exchange)
    }
    const problems: string[] = []
    for (const exchange of exchanges) {
      const requestId = exchange.outcome.response && header(exchange.outcome.response, 'x-request-id')
      const found = clientViolations(exchange, requestId !== undefined && upstreamIds.has(requestId))
      if (found.length > 0) problems.push(`${found.join('; ')}\n  ${describe(exchange)}`)
    }
    const counts = new Map<unknown, number>()
    for (const record of seen) {
      problems.push(...upstreamViolations(record, byRequestId, all))
      counts.set(record.headers['x-request-id'], (counts.get(record.headers['x-request-id']) ?? 0) + 1)
    }
    for (const [requestId, count] of counts)
      if (count > 1) problems.push(`the emulator got ${count} requests for request id ${requestId}`)
    if (problems.length > 0) throw new Error(problems.join('\n'))
    return true
  }

  await fc.assert(fc.asyncProperty(fc.array(specArb, { minLength: BATCH, maxLength: BATCH }), batchHolds), {
    numRuns: RUNS,
    // The error names the request that broke an invariant and what came back; shrinking a batch
    // adds little to that and, after a hang, would run for minutes.
    includeErrorInReport: true,
    endOnFailure: true,
  })
  assert.ok(sent >= RUNS * BATCH, `sent ${sent} requests`)

  // Nothing reached the emulator late, after its client had its answer.
  const late = emulator.requests.flatMap((record) => upstreamViolations(record, byRequestId, all))
  assert.deepEqual(late, [])
  await assertStillServing(proxy)
  await waitFor(() => emulator.openResponses === 0, 'the emulator finished every response')
})

test('headers over 16 KiB get a 431 problem+json and a clean close, not a dropped connection', async (t) => {
  const { emulator, proxy, port } = await startFuzzTarget(t)
  // Explicit, not inherited from Node's default or from NODE_OPTIONS=--max-http-header-size.
  assert.equal((proxy.app.media.server as { maxHeaderSize?: number }).maxHeaderSize, HEADER_LIMIT)

  const path = `/media/${KNOWN_IDS[0]}`
  const base = `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAuthorization: Bearer ${CLIENT_KEY}\r\n`
  const first = new RawConnection(port)
  const underLimit = await first.exchange(
    Buffer.from(`${base}X-Pad: ${'p'.repeat(HEADER_LIMIT - 1024)}\r\n\r\n`),
    false,
  )
  first.close()
  assert.equal(underLimit.error, undefined)
  assert.equal(underLimit.response?.status, 200, 'just under the limit is served')

  for (const [what, extra] of [
    ['one 17 KiB header', `X-Pad: ${'p'.repeat(17 * 1024)}\r\n`],
    ['one 64 KiB header', `X-Pad: ${'p'.repeat(64 * 1024)}\r\n`],
    ['one 1 MiB header', `X-Pad: ${'p'.repeat(1024 * 1024)}\r\n`],
    ['3,000 small headers', 'X-Dup: dddddd\r\n'.repeat(3_000)],
    ['a 17 KiB Authorization', `Authorization: Bearer ${'k'.repeat(17 * 1024)}\r\n`],
  ] as const) {
    const connection = new RawConnection(port)
    const outcome = await connection.exchange(Buffer.from(`${base}${extra}\r\n`), false)
    connection.close()
    assert.equal(outcome.error, undefined, what)
    const response = outcome.response as RawResponse
    assert.equal(response.status, 431, what)
    assert.equal(outcome.closedAfter, true, `${what}: the connection is closed after the answer`)
    assert.match(header(response, 'content-type') ?? '', /^application\/problem\+json/, what)
    const requestId = header(response, 'x-request-id')
    assert.match(requestId ?? '', REQUEST_ID, `${what}: X-Request-Id`)
    const problem = JSON.parse(response.body.toString('utf8')) as Record<string, unknown>
    assert.equal(problem.status, 431, what)
    assert.match(String(problem.type), /headers-too-large$/, what)
    assert.equal(problem.requestId, requestId, what)
  }
  assert.equal(emulator.requests.length, 1, 'only the request under the limit reached the emulator')
  await assertStillServing(proxy)
})

test('requests the HTTP parser rejects get a 400 problem+json and a clean close', async (t) => {
  const { emulator, proxy, port } = await startFuzzTarget(t)
  const id = KNOWN_IDS[0]
  const host = `Host: 127.0.0.1:${port}\r\nAuthorization: Bearer ${CLIENT_KEY}\r\n`
  for (const raw of [
    `GET /media/${id} HTTP/1.1\r\n${host}X-Injected: a\rb\r\n\r\n`,
    `GET /media/${id} HTTP/1.1\r\n${host}X-Injected: a\u0000b\r\n\r\n`,
    `GET /media/${id} HTTP/1.1\r\n${host}X-Injected: a\r\n b\r\n\r\n`,
    `GET /media/${id} HTTP/1.1\r\n${host}X Bad: v\r\n\r\n`,
    `GET /media/${id} x HTTP/1.1\r\n${host}\r\n`,
    `FOO /media/${id} HTTP/1.1\r\n${host}\r\n`,
    `GET /media/${id} HTTP/1.1\r\n${host}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
  ]) {
    const connection = new RawConnection(port)
    const outcome = await connection.exchange(Buffer.from(raw), false)
    connection.close()
    const what = JSON.stringify(raw)
    assert.equal(outcome.error, undefined, what)
    const response = outcome.response as RawResponse
    assert.equal(response.status, 400, what)
    assert.equal(outcome.closedAfter, true, `${what}: the connection is closed after the answer`)
    assert.match(header(response, 'content-type') ?? '', /^application\/problem\+json/, what)
    assert.match(header(response, 'x-request-id') ?? '', REQUEST_ID, `${what}: X-Request-Id`)
    const problem = JSON.parse(response.body.toString('utf8')) as Record<string, unknown>
    assert.equal(problem.status, 400, what)
  }
  assert.equal(emulator.requests.length, 0)
  await assertStillServing(proxy)
})

test('CONNECT is answered, not dropped', async (t) => {
  const { emulator, proxy, port } = await startFuzzTarget(t)
  for (const target of [`/media/${KNOWN_IDS[0]}`, `/v3/media/${KNOWN_IDS[0]}`, `127.0.0.1:${port}`]) {
    const connection = new RawConnection(port)
    const outcome = await connection.exchange(
      Buffer.from(
        `CONNECT ${target} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAuthorization: Bearer ${CLIENT_KEY}\r\n\r\n`,
      ),
      false,
    )
    connection.close()
    assert.equal(outcome.error, undefined, target)
    const response = outcome.response as RawResponse
    assert.ok(response.status >= 400 && response.status < 500, `${target}: ${response.status}`)
    if (target.startsWith('/')) {
      assert.equal(response.status, 405, target)
      assert.equal(header(response, 'allow'), 'GET, HEAD', target)
    }
    assert.match(header(response, 'content-type') ?? '', /^application\/problem\+json/, target)
    assert.match(header(response, 'x-request-id') ?? '', REQUEST_ID, target)
  }
  assert.equal(emulator.requests.length, 0)
  await assertStillServing(proxy)
})

test('after a request with an Upgrade header, the connection still answers (or is closed)', async (t) => {
  const { emulator, proxy, port } = await startFuzzTarget(t)
  const id = KNOWN_IDS[0]
  const head = `Host: 127.0.0.1:${port}\r\nAuthorization: Bearer ${CLIENT_KEY}\r\n`
  const upgrade = 'Connection: upgrade\r\nUpgrade: websocket\r\n'
  for (const [what, first] of [
    ['a media request', `GET /media/${id} HTTP/1.1\r\n${head}${upgrade}\r\n`],
    ['a bad id', `GET /media/nope HTTP/1.1\r\n${head}${upgrade}\r\n`],
    ['an unparsable path', `GET /media/%zz HTTP/1.1\r\n${head}${upgrade}\r\n`],
    ['another method', `NOTIFY /media/${id} HTTP/1.1\r\n${head}${upgrade}\r\n`],
    ['an Expect it cannot meet', `GET /media/${id} HTTP/1.1\r\n${head}Expect: something-else\r\n${upgrade}\r\n`],
    // Node keeps only the first 2,000 headers in req.headers, but its parser sees them all.
    ['2,500 headers first', `GET /media/${id} HTTP/1.1\r\n${head}${'X-Dup: d\r\n'.repeat(2_500)}${upgrade}\r\n`],
  ] as const) {
    // The proxy never upgrades, so a plain answer is right; but the connection must not go deaf:
    // whatever comes next on it (here a request the parser rejects) is answered, or it is closed.
    const connection = new RawConnection(port)
    const answer = await connection.exchange(Buffer.from(first), false)
    assert.equal(answer.error, undefined, what)
    assert.ok(answer.response && answer.response.status < 500, what)
    const next = await connection.exchange(
      Buffer.from(`GET /media/${id} HTTP/1.1\r\n${head}X: a\u0000b\r\n\r\n`),
      false,
    )
    connection.close()
    assert.equal(next.error, undefined, `${what}: the next request on that connection`)
    assert.equal(next.response?.status, 400, `${what}: the next request on that connection`)
  }
  assert.deepEqual(
    emulator.requests.map((r) => `${r.method} ${r.url}`),
    [`GET /v3/media/${id}`, `GET /v3/media/${id}`],
  )
  await assertStillServing(proxy)
})
