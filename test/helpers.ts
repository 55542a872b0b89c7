// Shared test fixtures: a throwaway key pair, the emulator and the proxy on 127.0.0.1 port 0
// (both closed by the test that started them), log capture, and bounded polling.
import { spawn } from 'node:child_process'
import { generateKeyPairSync, type KeyObject } from 'node:crypto'
import { Writable } from 'node:stream'
import type { TestContext } from 'node:test'
import { type AppDeps, buildApp, type ProxyApp } from '../src/app.js'
import { loadConfig } from '../src/config.js'
import { VonageEmulator } from '../src/emulator/emulator.js'

export const APPLICATION_ID = 'aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee'
export const MEDIA_ID = '1b456509-974c-458b-aafa-45fc48a4d976'

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
export function runMain(args: string[], env: Record<string, string>, timeoutMs = 20_000): Promise<ProcessResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts', ...args], {
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
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`main.ts did not exit within ${timeoutMs} ms; stderr: ${stderr}`))
    }, timeoutMs)
    child.once('error', reject)
    child.once('exit', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
  })
}
