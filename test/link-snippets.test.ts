// The README's "Signed links for browsers" section is run, not just written: its table of test
// vectors is what signLink gives, and each signing program (the fenced blocks whose first line
// is `// sign-link: <name>` or `# sign-link: <name>`) gives those very signatures, from its
// function and from its command line, and builds links the proxy's LinkVerifier accepts. The
// blocks run as they are written; a language whose command is missing here is skipped, saying
// which.
import assert from 'node:assert/strict'
import { execFile, spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type TestContext, test } from 'node:test'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { promisify } from 'node:util'
import { LinkVerifier, signLink } from '../src/links/signature.js'

const README = readFileSync(fileURLToPath(new URL('../README.md', import.meta.url)), 'utf8')
const HEADING = '## Signed links for browsers\n'
const SECTION = README.slice(README.indexOf(HEADING), README.indexOf('\n## ', README.indexOf(HEADING) + 1))
/** Every fenced block of the section. */
const BLOCKS = [...SECTION.matchAll(/^```(\w*)\n([\s\S]*?)^```$/gm)].map(([, info = '', text = '']) => ({ info, text }))
const BASE_URL = 'http://localhost:8080/'
const TTL_SECONDS = 300
const run = promisify(execFile)

interface Vector {
  path: string
  expires: number
  application: string | undefined
  key: string
  signature: string
}

/** The rows of the section's test-vector table. */
const VECTORS: Vector[] = (() => {
  assert.ok(README.includes(HEADING), 'the README has a "Signed links for browsers" section')
  return [...SECTION.matchAll(/^\| `([^`]+)` \| `(\d+)` \| (?:`([^`]+)`|—) \| `([^`]+)` \| `([^`]+)` \|$/gm)].map(
    ([, path = '', expires = '', application, key = '', signature = '']) => ({
      path,
      expires: Number(expires),
      application,
      key,
      signature,
    }),
  )
})()

/** The one block marked `sign-link: <name>`. */
function program(name: string): string {
  const marked = BLOCKS.filter(({ text }) =>
    new RegExp(`^(//|#) sign-link: ${name}\\s*$`).test(text.split('\n')[0] ?? ''),
  )
  assert.equal(marked.length, 1, `one block in "Signed links for browsers" starts with "sign-link: ${name}"`)
  return (marked[0] as { text: string }).text
}

function hasCommand(name: string): boolean {
  return spawnSync('sh', ['-c', 'command -v "$1"', 'sh', name], { stdio: 'ignore' }).status === 0
}

function workDir(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'link-snippets-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** Links a program built to VECTORS[0].path, without and with an application: the proxy takes them. */
function assertLinksVerify(language: string, links: string[], key: string): void {
  assert.equal(links.length, 2, `${language}: two links`)
  const verifier = new LinkVerifier({ keys: [key], maxTtlSeconds: TTL_SECONDS, now: Date.now })
  const applications = [undefined, VECTORS[2]?.application]
  for (const [i, link] of links.entries()) {
    const url = new URL(link)
    assert.equal(url.origin + url.pathname, `http://localhost:8080${VECTORS[0]?.path}`, `${language}: ${link}`)
    const check = verifier.verify(url.pathname, url.search.slice(1))
    assert.equal(check.kind, 'valid', `${language}: ${link} is ${JSON.stringify(check)}`)
    assert.equal(check.kind === 'valid' && check.application, applications[i]?.toLowerCase() ?? undefined)
    assert.equal(url.searchParams.has('application'), applications[i] !== undefined, link)
  }
}

/** A command's stdout, or a failure that shows its stderr. */
async function output(command: string, args: string[], cwd: string): Promise<string> {
  try {
    return (await run(command, args, { cwd, timeout: 20_000 })).stdout
  } catch (error) {
    const { stdout, stderr } = error as { stdout?: string; stderr?: string }
    assert.fail(`${command} ${args.join(' ')} failed: ${(error as Error).message}\n${stdout}${stderr}`)
  }
}

test('the test vectors are what signLink gives', () => {
  assert.ok(VECTORS.length >= 4, 'the table has its vectors')
  assert.ok(VECTORS.some(({ application }) => application !== undefined))
  assert.ok(
    VECTORS.some(({ key }) => /[^\x20-\x7e]/.test(key)),
    'one key is not ASCII',
  )
  for (const { path, expires, application, key, signature } of VECTORS)
    assert.equal(signLink(key, path, expires, application), signature, path)
})

test('node: the documented functions sign the vectors and build accepted links', async (t) => {
  const file = join(workDir(t), 'sign-link.mjs')
  writeFileSync(file, program('node'))
  const { signLink: documented, signedLink } = (await import(pathToFileURL(file).href)) as {
    signLink: (key: string, path: string, expires: number, application?: string) => string
    signedLink: (baseUrl: string, key: string, path: string, ttlSeconds: number, application?: string) => string
  }
  for (const { path, expires, application, key, signature } of VECTORS)
    assert.equal(documented(key, path, expires, application), signature, path)
  const { key, path } = VECTORS[0] as Vector
  assertLinksVerify(
    'node',
    [
      signedLink(BASE_URL, key, path, TTL_SECONDS),
      signedLink(BASE_URL, key, path, TTL_SECONDS, VECTORS[2]?.application),
    ],
    key,
  )
})

test('python: the documented script signs the vectors and builds accepted links', {
  skip: hasCommand('python3') ? false : 'python3 not installed: the Python example is not run',
}, async (t) => {
  const dir = workDir(t)
  writeFileSync(join(dir, 'sign_link.py'), program('python'))
  // The command line, as documented.
  const printed = await Promise.all(
    VECTORS.map(({ key, path, expires, application }) =>
      output('python3', ['sign_link.py', key, path, String(expires), ...(application ? [application] : [])], dir),
    ),
  )
  assert.deepEqual(
    printed.map((line) => line.trim()),
    VECTORS.map(({ signature }) => signature),
  )
  // The functions, imported (ASCII-escaped JSON in and out, whatever the locale).
  const harness = [
    'import json, sys',
    'from sign_link import sign_link, signed_link',
    'vectors, base, ttl, application = json.loads(sys.argv[1])',
    'signatures = [sign_link(v["key"], v["path"], v["expires"], v.get("application") or "") for v in vectors]',
    'first = vectors[0]',
    'links = [signed_link(base, first["key"], first["path"], ttl), signed_link(base, first["key"], first["path"], ttl, application)]',
    'print(json.dumps({"signatures": signatures, "links": links}))',
  ].join('\n')
  const input = JSON.stringify([VECTORS, BASE_URL, TTL_SECONDS, VECTORS[2]?.application])
  const result = JSON.parse(await output('python3', ['-c', harness, input], dir)) as {
    signatures: string[]
    links: string[]
  }
  assert.deepEqual(
    result.signatures,
    VECTORS.map(({ signature }) => signature),
  )
  assertLinksVerify('python', result.links, VECTORS[0]?.key as string)
})

test('java: the documented program signs the vectors and builds accepted links', {
  skip: hasCommand('java') ? false : 'java not installed: the Java example is not run',
  timeout: 30_000,
}, async (t) => {
  const dir = workDir(t)
  const source = program('java')
  writeFileSync(join(dir, 'Sign.java'), source)
  // One JVM runs the functions and main() on every vector: the source launcher runs the first
  // class of a file, so a harness class goes between the program's imports and its class.
  const literal = (text: string | undefined) =>
    text === undefined
      ? 'null'
      : JSON.stringify(text).replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)
  const first = VECTORS[0] as Vector
  const calls = [
    ...VECTORS.map(
      (v) =>
        `System.out.println(Sign.signLink(${literal(v.key)}, ${literal(v.path)}, ${v.expires}L, ${literal(v.application)}));`,
    ),
    ...VECTORS.map(
      (v) =>
        `Sign.main(new String[] {${[v.key, v.path, String(v.expires), ...(v.application ? [v.application] : [])].map(literal).join(', ')}});`,
    ),
    ...[undefined, VECTORS[2]?.application].map(
      (application) =>
        `System.out.println(Sign.signedLink(${literal(BASE_URL)}, ${literal(first.key)}, ${literal(first.path)}, ${TTL_SECONDS}L, ${literal(application)}));`,
    ),
  ]
  const imports = source.match(/^import .*$/gm) ?? []
  const body = source.replace(/^import .*\n/gm, '').replace(/^public class Sign\b/m, 'class Sign')
  const harness = [
    ...imports,
    'class SignHarness {',
    '    public static void main(String[] args) throws Exception {',
    ...calls.map((call) => `        ${call}`),
    '    }',
    '}',
    body,
  ].join('\n')
  writeFileSync(join(dir, 'SignHarness.java'), harness)
  const ascii = VECTORS.find(({ key, application }) => application && /^[\x20-\x7e]+$/.test(key)) as Vector
  const [lines, documented] = await Promise.all([
    output('java', ['SignHarness.java'], dir),
    // The command line, as documented, from the file exactly as written.
    output('java', ['Sign.java', ascii.key, ascii.path, String(ascii.expires), ascii.application as string], dir),
  ])
  const printed = lines.trim().split('\n')
  const expected = VECTORS.map(({ signature }) => signature)
  assert.deepEqual(printed.slice(0, 2 * VECTORS.length), [...expected, ...expected])
  assertLinksVerify('java', printed.slice(2 * VECTORS.length), first.key)
  assert.equal(documented.trim(), ascii.signature)
})
