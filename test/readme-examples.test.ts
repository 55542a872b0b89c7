// The README's "How a client uses it" examples are run, not just written: its webhook JSON
// parses and names Vonage file URLs on the default host list, and each rewrite program (sh,
// Node, Python, Java: the fenced blocks whose first line is `# proxy-url: <language>` or
// `// proxy-url: <language>`) turns those very URLs into proxy URLs and downloads the files'
// exact bytes through a live proxy in front of the TLS emulator, which sees the webhook's host
// in SNI and Host. The only change made to a program is the proxy's real address in place of
// localhost:8080. A language whose command is missing here is skipped, saying which.
import assert from 'node:assert/strict'
import { execFile, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { promisify } from 'node:util'
import { loadConfig } from '../src/config.js'
import { sampleWav } from '../src/emulator/media-store.js'
import { proxyEnv, REPO_ROOT, startProxy, startTlsEmulator } from './helpers.js'

const README = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8')
const HEADING = '## How a client uses it\n'
const SECTION = README.slice(README.indexOf(HEADING), README.indexOf('\n## ', README.indexOf(HEADING) + 1))
/** Every fenced block of the section: its info string and its text. */
const BLOCKS = [...SECTION.matchAll(/^```(\w*)\n([\s\S]*?)^```$/gm)].map(([, info = '', text = '']) => ({ info, text }))

function hasCommand(name: string): boolean {
  return spawnSync('sh', ['-c', 'command -v "$1"', 'sh', name], { stdio: 'ignore' }).status === 0
}

interface Language {
  name: string
  /** Where the program is saved (Java's source launcher wants a .java file). */
  file: string
  command: string
  /** The commands it needs, and why the test is skipped without them. */
  needs: string[]
}

const LANGUAGES: Language[] = [
  { name: 'sh', file: 'download.sh', command: 'sh', needs: ['sh', 'curl'] },
  { name: 'node', file: 'download.mjs', command: process.execPath, needs: [] },
  { name: 'python', file: 'download.py', command: 'python3', needs: ['python3'] },
  { name: 'java', file: 'Download.java', command: 'java', needs: ['java'] },
]

/** The section's one block marked `proxy-url: <name>`. */
function program(name: string): string {
  const marked = BLOCKS.filter(({ text }) =>
    new RegExp(`^(//|#) proxy-url: ${name}\\s*$`).test(text.split('\n')[0] ?? ''),
  )
  assert.equal(marked.length, 1, `one block in "How a client uses it" starts with "proxy-url: ${name}"`)
  return (marked[0] as { text: string }).text
}

/** The webhook examples, parsed: fails if one is not JSON. */
function webhookExamples(): Record<string, unknown>[] {
  return BLOCKS.filter(({ info, text }) => info === 'json' && text.trimStart().startsWith('{\n')).map(
    ({ text }) => JSON.parse(text) as Record<string, unknown>,
  )
}

/** The file URLs the README's webhooks carry: the image's and the recording's. */
function webhookFileUrls(): { image: string; recording: string } {
  const examples = webhookExamples()
  const image = examples.map((example) => (example.image as { url?: string } | undefined)?.url).find(Boolean)
  const recording = examples.map((example) => example.recording_url as string | undefined).find(Boolean)
  assert.ok(image && recording, 'the README shows an image webhook and a record webhook')
  return { image, recording }
}

/** An environment without proxy variables: urllib and curl would send localhost to them. */
function childEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(
    Object.entries(process.env).filter(([name]) => !/^(https?|all|no)_proxy$/i.test(name)),
  ) as NodeJS.ProcessEnv
}

test('the webhook examples are JSON, and their file URLs are on the default UPSTREAM_HOSTS', () => {
  const { image, recording } = webhookFileUrls()
  const { upstreamHosts } = loadConfig({ env: proxyEnv('https://api-us.nexmo.com') })
  const uuid = '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}'
  assert.match(image, new RegExp(`^https://[^/]+/v3/media/${uuid}$`))
  assert.match(recording, new RegExp(`^https://[^/]+/v1/files/${uuid}$`))
  for (const url of [image, recording]) assert.ok(upstreamHosts.has(new URL(url).hostname), url)
  for (const field of ['image.url', 'audio.url', 'video.url', 'file.url', 'vcard.url', 'sticker.url', 'content[].url'])
    assert.ok(SECTION.includes(`\`${field}\``), `the section names ${field}`)
  assert.ok(SECTION.includes('`recording_url`'))
})

test('the README rewrite programs download the webhook files through the proxy', {
  timeout: 60_000,
  skip: hasCommand('openssl') ? false : 'openssl is not installed: the TLS emulator needs it',
}, async (t) => {
  const { image, recording } = webhookFileUrls()
  const hosts = [...new Set([new URL(image).hostname, new URL(recording).hostname, 'api-us.nexmo.com'])]
  const { emulator, ca } = await startTlsEmulator(t, hosts)
  const files = [
    { url: image, body: randomBytes(40_000) },
    { url: recording, body: sampleWav(1) },
  ]
  const id = (url: string) => url.split('/').at(-1) as string
  emulator.media.addBuffer(id(image), files[0]?.body as Buffer, { contentType: 'image/jpeg' })
  emulator.files.addBuffer(id(recording), files[1]?.body as Buffer, { contentType: 'audio/wav' })
  const proxy = await startProxy(
    t,
    'https://api-us.nexmo.com',
    { UPSTREAM_CONNECT_TO: `127.0.0.1:${new URL(emulator.url).port}` },
    { upstreamCa: ca.caPem },
  )
  const proxyAddress = new URL(proxy.mediaUrl).host
  const work = mkdtempSync(join(tmpdir(), 'readme-examples-'))
  t.after(() => rmSync(work, { recursive: true, force: true }))

  for (const language of LANGUAGES) {
    const missing = language.needs.filter((name) => !hasCommand(name))
    const skip =
      missing.length > 0 ? `${missing.join(' and ')} not installed: the ${language.name} example is not run` : false
    await t.test(`${language.name}: proxy-url rewrite and download`, { skip }, async () => {
      const text = program(language.name)
      assert.ok(text.includes('localhost:8080'), `the ${language.name} example rewrites to localhost:8080`)
      const dir = join(work, language.name)
      mkdirSync(dir)
      const source = join(dir, language.file)
      writeFileSync(source, text.replaceAll('localhost:8080', proxyAddress))
      for (const [i, { url, body }] of files.entries()) {
        const out = join(dir, `file-${i}`)
        const before = emulator.requests.length
        try {
          await promisify(execFile)(language.command, [source, url, out], {
            cwd: dir,
            env: childEnv(),
            timeout: 20_000,
          })
        } catch (error) {
          const { stdout, stderr } = error as { stdout?: string; stderr?: string }
          assert.fail(
            `${language.name} ${language.file} ${url} failed: ${(error as Error).message}\n${stdout}${stderr}`,
          )
        }
        assert.ok(readFileSync(out).equals(body), `${language.name}: the bytes of ${url}`)
        const upstream = emulator.requests.slice(before)
        assert.equal(upstream.length, 1, `${language.name}: one request reached "Vonage" for ${url}`)
        assert.equal(upstream[0]?.servername, new URL(url).hostname, "asked of the webhook URL's host (SNI)")
        assert.equal(upstream[0]?.host, new URL(url).hostname, "asked of the webhook URL's host (Host)")
        assert.equal(upstream[0]?.url, new URL(url).pathname)
      }
    })
  }
})
