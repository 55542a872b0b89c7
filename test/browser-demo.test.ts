// The demo's agent desktop page, in a real browser: Debian's chromium, headless, driven over
// the DevTools protocol (Node's own WebSocket, no npm package). Its images render and its
// recording plays through signed links, with CORS for the page's origin; the expired link fails
// (403); the HTML attachment only downloads, and its script never runs (a control run, with the
// proxy's headers stripped, shows that it would have). Without chromium that test is skipped;
// the browser-less checks of the page and its links always run.
import assert from 'node:assert/strict'
import { type ChildProcessByStdio, spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Readable } from 'node:stream'
import { after, before, type TestContext, test } from 'node:test'
import { REPO_ROOT, waitFor } from './helpers.js'

/** The demo's sample images are 160 × 90 PNGs; its recording lasts 3 s. */
const IMAGE_WIDTH = 160
const RECORDING_SECONDS = 3
const ATTACHMENT_NAME = 'invoice.html'
/** What the attachment's script would set, were it ever run. */
const SCRIPT_MARK = 'attachment script ran'
const CHROMIUM_NAMES = ['chromium', 'chromium-browser', 'google-chrome-stable', 'google-chrome']
const STEP_TIMEOUT_MS = 10_000

interface Demo {
  demo: ChildProcessByStdio<null, Readable, Readable>
  pageUrl: string
  tmp: string
}

let running: Demo | undefined

before(async () => {
  const tmp = mkdtempSync(join(tmpdir(), 'browser-demo-tmp-'))
  const demo = spawn(process.execPath, ['--import', 'tsx', 'src/demo.ts'], {
    cwd: REPO_ROOT,
    env: { PATH: process.env.PATH ?? '', TMPDIR: tmp, PORT: '0', ADMIN_PORT: '0', LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  running = { demo, pageUrl: '', tmp }
  let output = ''
  demo.stdout.on('data', (chunk) => {
    output += chunk
  })
  demo.stderr.on('data', (chunk) => {
    output += chunk
  })
  running.pageUrl = await waitFor(
    () => {
      if (demo.exitCode !== null) throw new Error(`the demo exited before it was ready:\n${output}`)
      return /Agent desktop, in a browser: (\S+)/.exec(output)?.[1]
    },
    'the demo to print its page URL',
    30_000,
  )
})

after(async () => {
  if (running === undefined) return
  const { demo, tmp } = running
  if (demo.exitCode === null && demo.signalCode === null) {
    const exited = new Promise((resolve) => demo.once('exit', resolve))
    demo.kill('SIGTERM')
    const timer = setTimeout(() => demo.kill('SIGKILL'), 5_000)
    await exited
    clearTimeout(timer)
  }
  rmSync(tmp, { recursive: true, force: true })
})

/** The page's links, by element id, as a browser reads them from its attributes. */
function pageLinks(html: string): Record<'image-us' | 'image-eu' | 'recording' | 'attachment' | 'expired', string> {
  const link = (id: string) => {
    const found = new RegExp(`id="${id}" (?:src|href)="([^"]+)"`).exec(html)?.[1]
    assert.ok(found, `the page has #${id}`)
    return found.replaceAll('&amp;', '&')
  }
  return {
    'image-us': link('image-us'),
    'image-eu': link('image-eu'),
    recording: link('recording'),
    attachment: link('attachment'),
    expired: link('expired'),
  }
}

async function fetchPage(url: string): Promise<{ html: string; csp: string }> {
  const res = await fetch(url)
  assert.equal(res.status, 200)
  return { html: await res.text(), csp: res.headers.get('content-security-policy') ?? '' }
}

/** How many times the attachment's script called the page's /beacon, as the page says. */
async function beaconCalls(pageUrl: string): Promise<number> {
  const { html } = await fetchPage(pageUrl)
  const count = /id="script-ran" data-count="(\d+)"/.exec(html)?.[1]
  assert.ok(count !== undefined, 'the page says whether the attachment script ran')
  return Number(count)
}

test('the page runs no script, holds only signed links, and each answers as the page says', async () => {
  const { pageUrl } = running as Demo
  const origin = new URL(pageUrl).origin
  const { html, csp } = await fetchPage(pageUrl)
  assert.match(csp, /^default-src 'none';/)
  assert.doesNotMatch(csp, /script-src|unsafe-inline|unsafe-eval|\*/, csp)
  assert.doesNotMatch(html, /<script/i)

  const links = pageLinks(html)
  for (const url of Object.values(links)) {
    assert.match(new URL(url).search, /^\?expires=\d+&signature=[\w-]{43}$/, `${url} is a signed link`)
  }
  const get = (url: string) => fetch(url, { headers: { origin } })
  for (const [id, type] of [
    ['image-us', 'image/png'],
    ['image-eu', 'image/png'],
    ['recording', 'audio/wav'],
  ] as const) {
    const res = await get(links[id])
    assert.equal(res.status, 200, id)
    assert.equal(res.headers.get('content-type'), type, id)
    assert.equal(res.headers.get('access-control-allow-origin'), origin, `${id}: CORS for the page's origin`)
    await res.arrayBuffer()
  }

  const attachment = await get(links.attachment)
  assert.equal(attachment.status, 200)
  assert.match(attachment.headers.get('content-disposition') ?? '', /^attachment; filename="invoice\.html"$/)
  assert.match(attachment.headers.get('content-security-policy') ?? '', /\bsandbox\b/)
  assert.equal(attachment.headers.get('x-content-type-options'), 'nosniff')
  assert.match(await attachment.text(), /<script>/, 'the attachment does carry a script')

  const expired = await get(links.expired)
  assert.equal(expired.status, 403)
  await expired.arrayBuffer()
})

test('in chromium, the images render, the recording plays, the expired link fails, the attachment never runs', {
  timeout: 30_000,
}, async (t) => {
  const binary = findChromium()
  if (binary === undefined) {
    t.skip(`chromium not installed: none of ${CHROMIUM_NAMES.join(', ')} is on PATH (apt-get install chromium)`)
    return
  }
  const { pageUrl } = running as Demo
  const browser = await launchChromium(t, binary)
  const page = await browser.openTab()
  await browser.send('Browser.setDownloadBehavior', {
    behavior: 'allow',
    downloadPath: browser.downloads,
    eventsEnabled: true,
  })
  await page.navigate(pageUrl)

  // The load event waits for images; the recording may still be loading.
  const state = await waitFor(
    async () => {
      const now = await page.evaluate<PageState>(`(() => {
        const image = (id) => { const e = document.getElementById(id); return { complete: e.complete, width: e.naturalWidth } }
        const audio = document.getElementById('recording')
        return {
          images: { us: image('image-us'), eu: image('image-eu'), expired: image('expired') },
          audio: { readyState: audio.readyState, duration: audio.duration, error: audio.error ? audio.error.code : null },
          title: document.title,
        }
      })()`)
      const settled =
        Object.values(now.images).every((image) => image.complete) &&
        (now.audio.readyState >= 2 || now.audio.error !== null)
      return settled ? now : undefined
    },
    'the images and the recording to load or fail',
    STEP_TIMEOUT_MS,
  )
  assert.equal(state.images.us.width, IMAGE_WIDTH, 'the first image rendered')
  assert.equal(state.images.eu.width, IMAGE_WIDTH, 'the second image rendered')
  assert.equal(state.audio.error, null, 'the recording loads')
  assert.ok(state.audio.readyState >= 2, `the recording can play (readyState ${state.audio.readyState})`)
  assert.ok(Math.abs(state.audio.duration - RECORDING_SECONDS) < 0.1, `duration ${state.audio.duration}`)
  assert.equal(state.images.expired.width, 0, 'the expired link shows no image')
  const { html } = await fetchPage(pageUrl)
  const links = pageLinks(html)
  assert.equal((await fetch(links.expired)).status, 403)

  // The agent clicks the attachment: a download, and the page stays.
  const clicked = browser.download()
  await page.evaluate(`document.getElementById('attachment').click()`)
  assert.equal((await clicked).suggestedFilename, ATTACHMENT_NAME)
  // Or opens it in a tab of its own: a download too.
  const opened = browser.download()
  await browser.send('Target.createTarget', { url: links.attachment })
  assert.equal((await opened).suggestedFilename, ATTACHMENT_NAME)
  assert.equal(await page.evaluate('location.href'), pageUrl, 'the page is still shown')
  assert.equal(await page.evaluate('document.title'), state.title)
  assert.equal(await beaconCalls(pageUrl), 0, "the attachment's script never ran")

  // Control: the same bytes, served from this machine without the proxy's headers, do run
  // their script, and it does reach /beacon: the checks above would have seen it.
  const bytes = Buffer.from(await (await fetch(links.attachment)).arrayBuffer())
  const bare = createServer((_, res) => res.writeHead(200, { 'content-type': 'text/html' }).end(bytes))
  await new Promise<void>((resolve) => bare.listen(0, '127.0.0.1', resolve))
  t.after(() => new Promise((resolve) => bare.close(resolve)))
  const control = await browser.openTab()
  await control.navigate(`http://127.0.0.1:${(bare.address() as AddressInfo).port}/${ATTACHMENT_NAME}`)
  assert.equal(await control.evaluate('document.title'), SCRIPT_MARK)
  await waitFor(async () => (await beaconCalls(pageUrl)) > 0, 'the control to call /beacon', STEP_TIMEOUT_MS)
})

interface PageState {
  images: Record<'us' | 'eu' | 'expired', { complete: boolean; width: number }>
  audio: { readyState: number; duration: number; error: number | null }
  title: string
}

function findChromium(): string | undefined {
  for (const name of CHROMIUM_NAMES) {
    const found = spawnSync('sh', ['-c', 'command -v "$1"', 'sh', name], { encoding: 'utf8' })
    if (found.status === 0 && found.stdout.trim() !== '') return found.stdout.trim()
  }
  return undefined
}

type CdpMessage = { id?: number; method?: string; params?: Record<string, unknown>; sessionId?: string } & {
  result?: unknown
  error?: { message: string }
}

/** One DevTools connection to the browser; tabs are flat sessions on it. */
interface Browser {
  /** Where downloads go: inside the throwaway profile. */
  downloads: string
  send<T = Record<string, unknown>>(method: string, params?: object, sessionId?: string): Promise<T>
  /** The next download, once complete. */
  download(): Promise<{ suggestedFilename: string }>
  openTab(): Promise<Tab>
}

interface Tab {
  send<T = Record<string, unknown>>(method: string, params?: object): Promise<T>
  /** Resolves on the load event. */
  navigate(url: string): Promise<void>
  evaluate<T = unknown>(expression: string): Promise<T>
}

/**
 * Chromium headless with a throwaway profile (removed after the test), its DevTools on a free
 * port, which it writes to DevToolsActivePort in the profile. Closed, then killed with its
 * process group if it lingers, after the test.
 */
async function launchChromium(t: TestContext, binary: string): Promise<Browser> {
  const profile = mkdtempSync(join(tmpdir(), 'browser-demo-profile-'))
  const args = [
    '--headless=new',
    '--remote-debugging-port=0',
    `--user-data-dir=${profile}`,
    '--no-first-run',
    '--no-default-browser-check',
    '--disable-gpu',
    '--disable-extensions',
    '--disable-background-networking',
    '--mute-audio',
    // Chromium's sandbox cannot start as root; run as anyone else, it stays on.
    ...(process.getuid?.() === 0 ? ['--no-sandbox'] : []),
    'about:blank',
  ]
  // Its own process group, so that its renderers go with it.
  const chromium = spawn(binary, args, { stdio: ['ignore', 'ignore', 'pipe'], detached: true })
  let stderr = ''
  chromium.stderr.on('data', (chunk) => {
    stderr = (stderr + chunk).slice(-4_000)
  })
  const exited = new Promise<void>((resolve) => chromium.once('exit', () => resolve()))
  let socket: WebSocket | undefined
  t.after(async () => {
    socket?.close()
    if (chromium.exitCode === null && chromium.signalCode === null) {
      const timer = setTimeout(() => killGroup(chromium.pid as number), 3_000)
      killGroup(chromium.pid as number, 'SIGTERM')
      await exited
      clearTimeout(timer)
    }
    rmSync(profile, { recursive: true, force: true })
  })

  const portFile = join(profile, 'DevToolsActivePort')
  const [port, path] = await waitFor(
    () => {
      if (chromium.exitCode !== null) throw new Error(`chromium exited (${chromium.exitCode}):\n${stderr}`)
      const lines = existsSync(portFile) ? readFileSync(portFile, 'utf8').split('\n') : []
      return lines.length >= 2 && lines[1] !== '' ? lines : undefined
    },
    'chromium to write DevToolsActivePort',
    STEP_TIMEOUT_MS,
  )
  const ws = new WebSocket(`ws://127.0.0.1:${port}${path}`)
  socket = ws
  await new Promise((resolve, reject) => {
    ws.addEventListener('open', resolve, { once: true })
    ws.addEventListener('error', () => reject(new Error('could not connect to chromium')), { once: true })
  })

  let nextId = 1
  const pending = new Map<number, { resolve: (value: unknown) => void; reject: (err: Error) => void }>()
  const listeners = new Set<(message: CdpMessage) => void>()
  ws.addEventListener('message', (event) => {
    const message = JSON.parse(String(event.data)) as CdpMessage
    if (message.id !== undefined) {
      const waiting = pending.get(message.id)
      pending.delete(message.id)
      if (message.error) waiting?.reject(new Error(message.error.message))
      else waiting?.resolve(message.result)
      return
    }
    for (const listener of listeners) listener(message)
  })

  const send = <T>(method: string, params: object = {}, sessionId?: string): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const id = nextId++
      const timer = setTimeout(() => {
        pending.delete(id)
        reject(new Error(`${method}: no answer from chromium in ${STEP_TIMEOUT_MS} ms`))
      }, STEP_TIMEOUT_MS)
      pending.set(id, {
        resolve: (value) => {
          clearTimeout(timer)
          resolve(value as T)
        },
        reject: (err) => {
          clearTimeout(timer)
          reject(new Error(`${method}: ${err.message}`))
        },
      })
      ws.send(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }))
    })

  const event = (method: string, sessionId?: string, matches = (_: Record<string, unknown>) => true) =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      const timer = setTimeout(() => {
        listeners.delete(listener)
        reject(new Error(`no ${method} from chromium in ${STEP_TIMEOUT_MS} ms`))
      }, STEP_TIMEOUT_MS)
      const listener = (message: CdpMessage) => {
        if (message.method !== method || (sessionId !== undefined && message.sessionId !== sessionId)) return
        if (!matches(message.params ?? {})) return
        listeners.delete(listener)
        clearTimeout(timer)
        resolve(message.params ?? {})
      }
      listeners.add(listener)
    })

  const browser: Browser = {
    downloads: join(profile, 'downloads'),
    send,
    async download() {
      const began = event('Browser.downloadWillBegin')
      const { guid, suggestedFilename } = (await began) as { guid: string; suggestedFilename: string }
      const done = await event(
        'Browser.downloadProgress',
        undefined,
        (params) => params.guid === guid && params.state !== 'inProgress',
      )
      assert.equal(done.state, 'completed', `the download of ${suggestedFilename} completes`)
      return { suggestedFilename }
    },
    async openTab() {
      const { targetId } = await send<{ targetId: string }>('Target.createTarget', { url: 'about:blank' })
      const { sessionId } = await send<{ sessionId: string }>('Target.attachToTarget', { targetId, flatten: true })
      const tab: Tab = {
        send: (method, params) => send(method, params, sessionId),
        async navigate(url) {
          const loaded = event('Page.loadEventFired', sessionId)
          const { errorText } = await send<{ errorText?: string }>('Page.navigate', { url }, sessionId)
          if (errorText) throw new Error(`navigating to ${url}: ${errorText}`)
          await loaded
        },
        async evaluate<T>(expression: string) {
          const { result, exceptionDetails } = await send<{
            result: { value?: unknown }
            exceptionDetails?: { text: string }
          }>('Runtime.evaluate', { expression, returnByValue: true, awaitPromise: true }, sessionId)
          if (exceptionDetails) throw new Error(`${expression}: ${exceptionDetails.text}`)
          return result.value as T
        },
      }
      await tab.send('Page.enable')
      return tab
    },
  }
  return browser
}

/** `signal` to every process of the group chromium leads (its renderers, its zygote). */
function killGroup(pgid: number, signal: NodeJS.Signals = 'SIGKILL'): void {
  try {
    process.kill(-pgid, signal)
  } catch {
    // the group is gone
  }
}
