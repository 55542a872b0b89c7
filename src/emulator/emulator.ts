// A small fake of Vonage's Media API for the demo, the tests and the benchmark. It checks
// every Bearer token as Vonage does, serves media with ranges and validators, records what it
// received, and misbehaves on request (faults) so that failure handling can be tested.
// Media at /v3/media/:id and Voice recordings at /v1/files/:id, each from its own store; over
// plain http by default, or over TLS with a certificate (per SNI name if asked; see
// throwaway-ca.ts), so a client can check it as it checks Vonage's hosts.
import { createPublicKey, type KeyObject } from 'node:crypto'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { createServer as createHttpsServer, type ServerOptions as HttpsServerOptions } from 'node:https'
import type { AddressInfo, Socket } from 'node:net'
import type { Readable } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'
import { createSecureContext, type SecureContext, type TLSSocket } from 'node:tls'
import { UUID_SOURCE } from '../uuid.js'
import { type MediaItem, MediaStore } from './media-store.js'
import { type TokenCheck, verifyApplicationToken } from './verify-token.js'

const MEDIA_PATH = new RegExp(`^/v3/media/(${UUID_SOURCE})$`, 'i')
const FILES_PATH = new RegExp(`^/v1/files/(${UUID_SOURCE})$`, 'i')

/** A certificate (chain) and its private key, PEM. */
export interface TlsCredentials {
  cert: string | Buffer
  key: string | Buffer
}

export interface EmulatorTls extends TlsCredentials {
  /**
   * Per SNI name (case-insensitive, exact): present this certificate instead of the default,
   * e.g. one that does not name that host. Other names, and clients sending none, get the default.
   */
  sni?: Record<string, TlsCredentials>
}

export interface EmulatorOptions {
  /** The application's public key (or the private key, whose public half is used). */
  publicKey: KeyObject | string
  applicationId: string
  host?: string
  port?: number
  /** Seconds since the epoch, for token checks. */
  now?: () => number
  /** Serve HTTPS with this certificate instead of plain http. */
  tls?: EmulatorTls
}

/** One misbehaviour, used by the next media or recording request that reaches the emulator. */
export interface Fault {
  /** Answer this status (503, 429, ...) with a problem+json body instead of the media. */
  status?: number
  /** With status: a Retry-After header value. */
  retryAfter?: string
  /** Wait this long before sending response headers. */
  headersDelayMs?: number
  /** Destroy the socket before answering anything. */
  resetBeforeHeaders?: boolean
  /** Destroy the socket after this many body bytes. */
  resetAfterBytes?: number
  /** Send this many body bytes, then go silent (socket left open). */
  stallAfterBytes?: number
  /** Stream without Content-Length (chunked). */
  chunked?: boolean
  /** Answer with Connection: close, and close the connection after the response. */
  closeConnection?: boolean
  /** No Content-Length and no chunked encoding: the body ends when the connection closes. */
  closeDelimited?: boolean
  /** Send the body in pieces of dripBytes, each after this much silence: slow but steady. */
  dripDelayMs?: number
  /** With dripDelayMs: the size of each piece (1 KiB by default). */
  dripBytes?: number
}

export interface RecordedRequest {
  method: string
  url: string
  headers: IncomingMessage['headers']
  /** The Host header as received. */
  host: string | undefined
  /** The TLS SNI name the client sent; undefined over plain http or when it sent none. */
  servername: string | undefined
  /** The jti of a valid token, if one was presented. */
  jti: string | undefined
  /** The application_id of a valid token. */
  application: string | undefined
  status: number | undefined
  /** True once the response ended without being completely sent (client went away or reset). */
  aborted: boolean
  /** True once the response has ended, either way. */
  closed: boolean
  /** Body bytes handed to the response so far. */
  bodyBytes: number
  /** True while the response waits for 'drain': the reader (the proxy) has stopped reading. */
  readonly waitingForDrain: boolean
}

export class VonageEmulator {
  /** Served at /v3/media/:id. */
  readonly media = new MediaStore()
  /** Voice recordings, served at /v1/files/:id: a media id is not a file id, nor the reverse. */
  readonly files = new MediaStore()
  readonly requests: RecordedRequest[] = []
  readonly faults: Fault[] = []
  readonly revokedTokenIds = new Set<string>()
  /** Per application id, the public keys its tokens may be signed with. */
  readonly #applications = new Map<string, KeyObject[]>()
  readonly #applicationId: string
  readonly #now: () => number
  readonly #server: Server
  readonly #sockets = new Set<Socket>()
  readonly #host: string
  readonly #port: number
  readonly #tls: boolean

  constructor(options: EmulatorOptions) {
    this.#applicationId = options.applicationId
    this.#applications.set(options.applicationId, [publicKeyOf(options.publicKey)])
    this.#now = options.now ?? (() => Date.now() / 1000)
    this.#host = options.host ?? '127.0.0.1'
    this.#port = options.port ?? 0
    this.#tls = options.tls !== undefined
    const handler = (req: IncomingMessage, res: ServerResponse) => this.#handle(req, res)
    this.#server = options.tls ? createHttpsServer(httpsOptions(options.tls), handler) : createServer(handler)
    // 'connection' is the TCP socket, before any TLS: destroying it ends the TLS one too.
    this.#server.on('connection', (socket) => {
      this.#sockets.add(socket)
      socket.once('close', () => this.#sockets.delete(socket))
    })
  }

  /** Trust these application keys from now on (the application's key was rotated). */
  setPublicKeys(...keys: (KeyObject | string)[]): void {
    this.#applications.set(this.#applicationId, keys.map(publicKeyOf))
  }

  /** Another application of the same account: its tokens are checked against these keys. */
  addApplication(applicationId: string, ...keys: (KeyObject | string)[]): void {
    this.#applications.set(applicationId, keys.map(publicKeyOf))
  }

  async listen(): Promise<string> {
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', reject)
      this.#server.listen(this.#port, this.#host, resolve)
    })
    return this.url
  }

  get url(): string {
    const { port } = this.#server.address() as AddressInfo
    return `${this.#tls ? 'https' : 'http'}://${this.#host.includes(':') ? `[${this.#host}]` : this.#host}:${port}`
  }

  /** Requests still being answered. */
  get openResponses(): number {
    return this.requests.filter((request) => !request.closed).length
  }

  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()))
    for (const socket of this.#sockets) socket.destroy()
    await closed
  }

  #handle(req: IncomingMessage, res: ServerResponse) {
    const record: RecordedRequest = {
      method: req.method ?? '',
      url: req.url ?? '',
      headers: req.headers,
      host: req.headers.host,
      servername: servernameOf(req),
      jti: undefined,
      application: undefined,
      status: undefined,
      aborted: false,
      closed: false,
      bodyBytes: 0,
      get waitingForDrain() {
        return res.writableNeedDrain
      },
    }
    this.requests.push(record)
    res.once('close', () => {
      record.closed = true
      record.aborted = !res.writableFinished
      record.status = res.statusCode
    })
    res.setHeader('server', 'vonage-emulator')
    res.setHeader('set-cookie', 'emulator-session=should-never-reach-a-client; Path=/; HttpOnly')

    const media = MEDIA_PATH.exec(req.url ?? '')
    const file = media ? undefined : FILES_PATH.exec(req.url ?? '')
    const id = media?.[1] ?? file?.[1]
    if (!id) return problem(res, 404, 'Not Found', 'No such resource.')
    const store = media ? this.media : this.files
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD')
      return problem(res, 405, 'Method Not Allowed', 'Use GET or HEAD.')
    }
    const fault = this.faults.shift()
    if (fault?.resetBeforeHeaders) {
      req.socket.destroy()
      return
    }
    const answer = () => this.#answer(req, res, record, store, id, fault)
    if (fault?.headersDelayMs) {
      const timer = setTimeout(answer, fault.headersDelayMs)
      res.once('close', () => clearTimeout(timer))
    } else {
      answer()
    }
  }

  #answer(
    req: IncomingMessage,
    res: ServerResponse,
    record: RecordedRequest,
    store: MediaStore,
    id: string,
    fault?: Fault,
  ) {
    if (fault?.status) {
      if (fault.retryAfter) res.setHeader('retry-after', fault.retryAfter)
      if (fault.status === 401) res.setHeader('www-authenticate', 'Bearer realm="vonage-emulator"')
      return problem(res, fault.status, 'Injected fault', `The emulator was told to answer ${fault.status}.`)
    }
    const checks = [...this.#applications].flatMap(([applicationId, keys]) =>
      keys.map((key) => verifyApplicationToken(req.headers.authorization, key, applicationId, this.#now())),
    )
    const check = checks.find((result) => result.ok) ?? (checks[0] as TokenCheck)
    if (!check.ok || this.revokedTokenIds.has(check.token.claims.jti)) {
      res.setHeader('www-authenticate', 'Bearer realm="vonage-emulator"')
      const reason = check.ok ? 'token revoked' : check.reason
      return problem(res, 401, 'Invalid Token', `The request is not authorized: ${reason}.`)
    }
    record.jti = check.token.claims.jti
    record.application = check.token.claims.application_id
    const item = store.get(id)
    if (!item) {
      const what = store === this.media ? 'media item' : 'recording'
      return problem(res, 404, 'Not Found', `The ${what} does not exist or has expired.`)
    }
    serveMedia(req, res, record, item, fault)
  }
}

function serveMedia(
  req: IncomingMessage,
  res: ServerResponse,
  record: RecordedRequest,
  item: MediaItem,
  fault?: Fault,
): void {
  res.setHeader('content-type', item.contentType)
  res.setHeader('etag', item.etag)
  res.setHeader('last-modified', item.lastModified.toUTCString())
  res.setHeader('accept-ranges', 'bytes')
  res.setHeader('cache-control', 'private, max-age=172800')
  if (item.fileName) res.setHeader('content-disposition', `inline; filename="${item.fileName}"`)

  if (notModified(req, item)) {
    res.statusCode = 304
    res.end()
    return
  }

  let start = 0
  let end = item.size - 1
  const range = rangeFor(req, item)
  if (range === 'unsatisfiable') {
    res.statusCode = 416
    res.setHeader('content-range', `bytes */${item.size}`)
    res.end()
    return
  }
  if (range) {
    ;[start, end] = range
    res.statusCode = 206
    res.setHeader('content-range', `bytes ${start}-${end}/${item.size}`)
  } else {
    res.statusCode = 200
  }
  const length = end - start + 1
  if (fault?.closeConnection || fault?.closeDelimited) res.setHeader('connection', 'close')
  if (fault?.closeDelimited) res.useChunkedEncodingByDefault = false
  else if (!fault?.chunked) res.setHeader('content-length', length)
  if (req.method === 'HEAD' || length === 0) {
    res.end()
    return
  }

  const body = item.open(start, end)
  if (fault?.dripDelayMs !== undefined) {
    void drip(res, body, fault.dripBytes ?? 1024, fault.dripDelayMs)
    return
  }
  const limit = fault?.resetAfterBytes ?? fault?.stallAfterBytes
  if (limit === undefined) {
    body.on('data', (chunk: Buffer) => {
      record.bodyBytes += chunk.length
    })
    body.pipe(res)
    res.once('close', () => body.destroy())
    return
  }
  let sent = 0
  let cut = false
  body.on('data', (chunk: Buffer) => {
    if (cut) return // a chunk read before the body was destroyed
    const piece = chunk.subarray(0, limit - sent)
    sent += piece.length
    if (sent < limit) {
      res.write(piece)
      return
    }
    cut = true
    body.destroy()
    // stallAfterBytes: leave the response open and silent. resetAfterBytes: reset only once
    // the headers and those bytes are on the wire, or the peer would see a reset before headers.
    const reset = fault?.resetAfterBytes !== undefined ? () => res.socket?.destroy() : undefined
    if (piece.length > 0) res.write(piece, reset)
    else reset?.()
  })
  res.once('close', () => body.destroy())
}

/** Writes the body piece by piece, pausing before each, until it ends or the response closes. */
async function drip(res: ServerResponse, body: Readable, pieceBytes: number, delayMs: number): Promise<void> {
  res.once('close', () => body.destroy())
  try {
    for await (const chunk of body as AsyncIterable<Buffer>) {
      for (let at = 0; at < chunk.length; at += pieceBytes) {
        await sleep(delayMs)
        if (res.destroyed) return
        res.write(chunk.subarray(at, at + pieceBytes))
      }
    }
    res.end()
  } catch {
    // The body was destroyed because the response closed: nothing left to answer.
    res.destroy()
  }
}

function notModified(req: IncomingMessage, item: MediaItem): boolean {
  const ifNoneMatch = req.headers['if-none-match']
  if (ifNoneMatch) {
    return ifNoneMatch
      .split(',')
      .map((tag) => tag.trim().replace(/^W\//, ''))
      .some((tag) => tag === '*' || tag === item.etag)
  }
  const ifModifiedSince = req.headers['if-modified-since']
  if (ifModifiedSince) {
    const since = Date.parse(ifModifiedSince)
    return !Number.isNaN(since) && item.lastModified.getTime() <= since
  }
  return false
}

/** A single byte range, honouring If-Range; multi-range requests are served whole. */
function rangeFor(req: IncomingMessage, item: MediaItem): [number, number] | 'unsatisfiable' | undefined {
  const header = req.headers.range
  if (!header) return undefined
  const ifRange = req.headers['if-range']
  if (ifRange && ifRange !== item.etag && ifRange !== item.lastModified.toUTCString()) return undefined
  const match = /^bytes=(\d*)-(\d*)$/.exec(header.trim())
  if (!match || (match[1] === '' && match[2] === '')) return undefined
  let start: number
  let end: number
  if (match[1] === '') {
    const suffix = Number(match[2])
    if (suffix === 0) return 'unsatisfiable'
    start = Math.max(0, item.size - suffix)
    end = item.size - 1
  } else {
    start = Number(match[1])
    end = match[2] === '' ? item.size - 1 : Math.min(Number(match[2]), item.size - 1)
  }
  if (start >= item.size || start > end) return 'unsatisfiable'
  return [start, end]
}

function problem(res: ServerResponse, status: number, title: string, detail: string): void {
  const body = JSON.stringify({
    type: `https://developer.vonage.com/api-errors#${status}`,
    title,
    detail,
    instance: crypto.randomUUID(),
  })
  res.statusCode = status
  res.setHeader('content-type', 'application/problem+json')
  res.setHeader('content-length', Buffer.byteLength(body))
  res.end(body)
}

/** The https server's options: the default certificate, and a context per SNI name if asked. */
function httpsOptions(tls: EmulatorTls): HttpsServerOptions {
  const { cert, key, sni } = tls
  if (!sni) return { cert, key }
  const contexts = new Map<string, SecureContext>(
    Object.entries(sni).map(([name, credentials]) => [name.toLowerCase(), createSecureContext(credentials)]),
  )
  // No context for a name: the server's default certificate is presented.
  return { cert, key, SNICallback: (name, callback) => callback(null, contexts.get(name.toLowerCase())) }
}

/** The SNI name of a TLS request (the socket's servername is false when none was sent). */
function servernameOf(req: IncomingMessage): string | undefined {
  const servername = (req.socket as Partial<TLSSocket>).servername
  return typeof servername === 'string' ? servername : undefined
}

function publicKeyOf(key: KeyObject | string): KeyObject {
  return typeof key !== 'string' && key.type === 'public' ? key : createPublicKey(key)
}
