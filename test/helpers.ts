// Shared test fixtures: a throwaway key pair, the emulator and the proxy on 127.0.0.1 port 0
// (both closed by the test that started them), log capture, and bounded polling.
import { type ChildProcessByStdio, spawn } from 'node:child_process'
import { generateKeyPairSync, type KeyObject } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import {
  createServer as createHttpServer,
  type Server as HttpServer,
  get as httpGet,
  request as httpRequest,
  type IncomingMessage,
  type OutgoingHttpHeaders,
  type ServerResponse,
} from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import { type AddressInfo, connect, createServer as createNetServer, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type Readable, Writable } from 'node:stream'
import type { TestContext } from 'node:test'
import { fileURLToPath } from 'node:url'
import { request as undiciRequest } from 'undici'
import { type AppDeps, buildApp, type ProxyApp } from '../src/app.js'
import { loadConfig } from '../src/config.js'
import { type RecordedRequest, VonageEmulator } from '../src/emulator/emulator.js'
import { makeThrowawayCa, type ThrowawayCa } from '../src/emulator/throwaway-ca.js'

/** The repository root: where src/main.ts is run from. */
export const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url))

export const APPLICATION_ID = 'aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee'
export const MEDIA_ID = '1b456509-974c-458b-aafa-45fc48a4d976'
const STALL_POLLS = 20

export interface TestKeys {
  privateKey: KeyObject
  publicKey: KeyObject
  pkcs8: string
  pkcs1: string
  publicPem: string
}

export function makeKeys(modulusLength = 2048): TestKeys {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength })
  return {
    privateKey,
    publicKey,
    pkcs8: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    pkcs1: privateKey.export({ type: 'pkcs1', format: 'pem' }).toString(),
    publicPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
  }
}

/** One key pair per test file: generating RSA keys is slow. */
export const keys = makeKeys()

export async function startEmulator(
  t: TestContext,
  options: Partial<ConstructorParameters<typeof VonageEmulator>[0]> = {},
): Promise<VonageEmulator> {
  const emulator = new VonageEmulator({ publicKey: keys.publicKey, applicationId: APPLICATION_ID, ...options })
  await emulator.listen()
  t.after(() => emulator.close())
  return emulator
}

export interface RunningProxy {
  app: ProxyApp
  mediaUrl: string
  adminUrl: string
  /** Every log line written so far, parsed. */
  logs: Record<string, unknown>[]
  /** The raw log output, for secret scans. */
  rawLogs: () => string
}

/** Environment for a proxy in front of `upstreamUrl`, on ephemeral ports. */
export function proxyEnv(upstreamUrl: string, env: Record<string, string> = {}): Record<string, string> {
  return {
    VONAGE_APPLICATION_ID: APPLICATION_ID,
    VONAGE_PRIVATE_KEY: keys.pkcs8,
    UPSTREAM_BASE_URL: upstreamUrl,
    HOST: '127.0.0.1',
    PORT: '0',
    ADMIN_PORT: '0',
    LOG_LEVEL: 'info',
    ...env,
  }
}

export async function startProxy(
  t: TestContext,
  upstreamUrl: string,
  env: Record<string, string> = {},
  deps: AppDeps = {},
): Promise<RunningProxy> {
  const config = loadConfig({ env: proxyEnv(upstreamUrl, env) })
  const chunks: string[] = []
  const logStream = new Writable({
    write(chunk, _encoding, callback) {
      chunks.push(chunk.toString())
      callback()
    },
  })
  const app = await buildApp(config, { logStream, ...deps })
  const { mediaUrl, adminUrl } = await app.listen()
  t.after(() => app.close(0))
  const rawLogs = () => chunks.join('')
  return {
    app,
    mediaUrl,
    adminUrl,
    rawLogs,
    get logs() {
      return rawLogs()
        .split('\n')
        .filter((line) => line.trim() !== '')
        .map((line) => JSON.parse(line) as Record<string, unknown>)
    },
  }
}

/** Access-log lines ("request completed") captured so far. */
export function accessLines(proxy: RunningProxy): Record<string, unknown>[] {
  return proxy.logs.filter((line) => line.msg === 'request completed')
}

/** Polls until `check` returns a truthy value; fails after a bounded deadline. */
export async function waitFor<T>(
  check: () => T | Promise<T>,
  message: string,
  timeoutMs = 5_000,
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await check()
    if (value) return value as NonNullable<T>
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${message}`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

export interface ProcessResult {
  code: number | null
  stdout: string
  stderr: string
}

/** Runs src/main.ts (through tsx) as a real process, with exactly this environment. */
interface MainProcess {
  child: ChildProcessByStdio<null, Readable, Readable>
  stdout: () => string
  stderr: () => string
  /** Resolves with the exit code (null when killed by a signal). */
  exited: Promise<number | null>
}

/** src/main.ts through tsx, with exactly this environment; both pipes are read as they fill. */
function startMain(args: string[], env: Record<string, string>): MainProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts', ...args], {
    cwd: REPO_ROOT,
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (chunk) => {
    stdout += chunk
  })
  child.stderr.on('data', (chunk) => {
    stderr += chunk
  })
  const exited = new Promise<number | null>((resolve, reject) => {
    child.once('error', reject)
    child.once('exit', (code) => resolve(code))
  })
  return { child, stdout: () => stdout, stderr: () => stderr, exited }
}

/** Runs src/main.ts to its end (a configuration check, a refused start-up). */
export async function runMain(args: string[], env: Record<string, string>, timeoutMs = 20_000): Promise<ProcessResult> {
  const main = startMain(args, env)
  const timer = setTimeout(() => main.child.kill('SIGKILL'), timeoutMs)
  const code = await main.exited
  clearTimeout(timer)
  if (main.child.signalCode === 'SIGKILL') {
    throw new Error(`main.ts did not exit within ${timeoutMs} ms; stderr: ${main.stderr()}`)
  }
  return { code, stdout: main.stdout(), stderr: main.stderr() }
}

export interface ProxyProcess {
  child: ChildProcessByStdio<null, Readable, Readable>
  pid: number
  mediaUrl: string
  adminUrl: string
  /** Everything the process wrote so far. */
  stdout: () => string
  stderr: () => string
  /** Resolves with the exit code (null when killed by a signal). */
  exited: Promise<number | null>
}

/**
 * src/main.ts as a real process (through tsx), with exactly this environment; resolves once
 * it logs its listening line (use PORT=0 and ADMIN_PORT=0). Killed after the test.
 */
export async function spawnProxy(t: TestContext, env: Record<string, string>): Promise<ProxyProcess> {
  const { child, stdout, stderr, exited } = startMain([], env)
  t.after(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    await exited
  })
  let exitedEarly = false
  void exited.then(() => {
    exitedEarly = true
  })
  const listening = await waitFor(
    () => {
      if (exitedEarly) throw new Error(`proxy exited before listening; stderr: ${stderr()}`)
      return stdout()
        .split('\n')
        .filter((line) => line.startsWith('{'))
        .map((line) => JSON.parse(line) as { msg?: string; mediaUrl?: string; adminUrl?: string })
        .find((line) => line.msg === 'vonage-media-proxy listening')
    },
    'the proxy process to listen',
    20_000,
  )
  return {
    child,
    pid: child.pid as number,
    mediaUrl: listening.mediaUrl as string,
    adminUrl: listening.adminUrl as string,
    stdout,
    stderr,
    exited,
  }
}

export interface RawResponse {
  status: number
  /** Header lines as received, names lower-cased, repeated names kept. */
  lines: [string, string][]
  /** Repeated names joined with ", ". */
  headers: Record<string, string>
  body: Buffer
}

/**
 * One request over a bare TCP socket, so that the path and exactly these header lines reach
 * the proxy byte for byte (no client resolves `..`, re-encodes `%2F`, or adds or merges a
 * header); reads the response until the connection closes. Without headerLines it sends Host
 * and Connection: close; with a body, Content-Type and Content-Length too.
 */
export function rawRequest(
  baseUrl: string,
  method: string,
  path: string,
  options: { headerLines?: string[]; body?: string } = {},
): Promise<RawResponse> {
  const { hostname, port } = new URL(baseUrl)
  const body = options.body ?? ''
  const headerLines = options.headerLines ?? [
    `Host: ${hostname}:${port}`,
    ...(body ? ['Content-Type: application/json', `Content-Length: ${Buffer.byteLength(body)}`] : []),
    'Connection: close',
  ]
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname)
    const chunks: Buffer[] = []
    socket.setTimeout(5_000, () => socket.destroy(new Error(`no complete answer to ${method} ${path}`)))
    socket.on('data', (chunk: Buffer) => chunks.push(chunk))
    socket.once('error', reject)
    socket.once('end', () => {
      const data = Buffer.concat(chunks)
      const split = data.indexOf('\r\n\r\n')
      if (split === -1) return reject(new Error(`no response head for ${method} ${path}`))
      const [statusLine = '', ...rest] = data.subarray(0, split).toString('latin1').split('\r\n')
      const lines = rest.map((line): [string, string] => {
        const colon = line.indexOf(':')
        return [line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim()]
      })
      const headers: Record<string, string> = {}
      for (const [name, value] of lines)
        headers[name] = headers[name] === undefined ? value : `${headers[name]}, ${value}`
      resolve({ status: Number(statusLine.split(' ')[1]), lines, headers, body: data.subarray(split + 4) })
    })
    socket.write(`${method} ${path} HTTP/1.1\r\n${headerLines.map((line) => `${line}\r\n`).join('')}\r\n${body}`)
  })
}

/**
 * A server in front of the emulator that passes every request on and every answer back, adding
 * `extraHeaders` to the answers; HTTPS when `tls` is given. The emulator still checks the token
 * and records the request as it arrived. Closed after the test.
 */
export async function startPassThrough(
  t: TestContext,
  emulator: VonageEmulator,
  options: { tls?: { cert: Buffer; key: Buffer }; extraHeaders?: OutgoingHttpHeaders } = {},
): Promise<{ server: HttpServer; url: string }> {
  const target = new URL(emulator.url)
  const handler = (req: IncomingMessage, res: ServerResponse) => {
    const forwarded = httpRequest(
      { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers },
      (upstream) => {
        res.writeHead(upstream.statusCode ?? 502, { ...upstream.headers, ...options.extraHeaders })
        upstream.pipe(res)
      },
    )
    forwarded.once('error', () => res.destroy())
    req.pipe(forwarded)
  }
  const server = options.tls ? createHttpsServer(options.tls, handler) : createHttpServer(handler)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.after(async () => {
    const closed = new Promise<void>((resolve) => server.close(() => resolve()))
    server.closeAllConnections()
    await closed
  })
  const { port } = server.address() as AddressInfo
  return { server, url: `${options.tls ? 'https' : 'http'}://127.0.0.1:${port}` }
}

/** Sends `count` GETs at once and returns their statuses, bodies read and discarded. */
export function concurrentStatuses(url: string, count: number): Promise<number[]> {
  return Promise.all(
    Array.from({ length: count }, async () => {
      const res = await undiciRequest(url)
      await res.body.dump()
      return res.statusCode
    }),
  )
}

/** Starts a download and stops reading after the headers, so it stays in flight. */
export function pausedDownload(url: string): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req = httpGet(url, (res) => {
      res.pause()
      resolve(res)
    })
    req.once('error', reject)
  })
}

/**
 * Waits until the emulator's response is stalled by the reader (the proxy): waiting for 'drain'
 * with not one byte more taken over 20 polls in a row. A reader that does not apply
 * backpressure empties the emulator's buffer within a poll or two.
 */
export async function waitForStall(upstream: RecordedRequest, message: string): Promise<void> {
  let steady = 0
  let last = -1
  await waitFor(
    () => {
      steady = upstream.waitingForDrain && upstream.bodyBytes === last ? steady + 1 : 0
      last = upstream.bodyBytes
      return steady >= STALL_POLLS
    },
    message,
    20_000,
  )
}

/**
 * A bare TCP upstream that hands each request's head (read up to the blank line) and the socket
 * to `answer`, which writes whatever bytes it likes: HTTP/1.0, resets, bodies that never end.
 * Closed after the test; returns its http:// base URL.
 */
export async function startRawUpstream(
  t: TestContext,
  answer: (socket: Socket, head: string, index: number) => void | Promise<void>,
): Promise<string> {
  const sockets = new Set<Socket>()
  let index = 0
  const server = createNetServer((socket) => {
    sockets.add(socket)
    socket.on('error', () => {})
    let buffered = ''
    socket.on('data', (data: Buffer) => {
      buffered += data.toString('latin1')
      let end = buffered.indexOf('\r\n\r\n')
      while (end !== -1) {
        const head = buffered.slice(0, end)
        buffered = buffered.slice(end + 4)
        void answer(socket, head, index++)
        end = buffered.indexOf('\r\n\r\n')
      }
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.after(() => {
    for (const socket of sockets) socket.destroy()
    server.close()
  })
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

/**
 * The emulator over HTTPS, its certificate from a throwaway CA (`ca.caPem`, `ca.caPath`) naming
 * `names` plus 127.0.0.1 and localhost. For each name in `narrowFor` it presents instead a
 * certificate from the same CA that does not name it (only not-this-host.invalid): "a host on
 * the list whose certificate does not name it". Emulator and CA files go after the test.
 */
export async function startTlsEmulator(
  t: TestContext,
  names: string[],
  options: { narrowFor?: string[]; emulator?: Partial<ConstructorParameters<typeof VonageEmulator>[0]> } = {},
): Promise<{ emulator: VonageEmulator; ca: ThrowawayCa }> {
  const dir = mkdtempSync(join(tmpdir(), 'vmp-ca-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const narrowFor = options.narrowFor ?? []
  const alsoSigned = narrowFor.length > 0 ? { names: ['not-this-host.invalid'] } : undefined
  const ca = makeThrowawayCa(dir, names, alsoSigned ? { alsoSigned } : {})
  const narrow = ca.alsoSigned && { cert: ca.alsoSigned.certPem, key: ca.alsoSigned.keyPem }
  const sni = narrow ? Object.fromEntries(narrowFor.map((name) => [name, narrow])) : undefined
  const emulator = await startEmulator(t, {
    ...options.emulator,
    tls: { cert: ca.certPem, key: ca.keyPem, ...(sni ? { sni } : {}) },
  })
  return { emulator, ca }
}
