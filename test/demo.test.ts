// `npm run demo` prints a curl line that really downloads the sample image through the proxy,
// and Ctrl-C stops both servers and deletes the throwaway keys.
import assert from 'node:assert/strict'
import { execFile, spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { promisify } from 'node:util'
import { REPO_ROOT, waitFor } from './helpers.js'

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])

test('the demo prints a working curl line, and Ctrl-C cleans up', { timeout: 60_000 }, async (t) => {
  const demo = spawn(process.execPath, ['--import', 'tsx', 'src/demo.ts'], {
    cwd: REPO_ROOT,
    env: { PATH: process.env.PATH ?? '', PORT: '0', ADMIN_PORT: '0', LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const exited = new Promise<number | null>((resolve) => demo.once('exit', (code) => resolve(code)))
  t.after(async () => {
    if (demo.exitCode === null && demo.signalCode === null) demo.kill('SIGKILL')
    await exited
  })
  let out = ''
  demo.stdout.on('data', (chunk) => {
    out += chunk
  })
  demo.stderr.resume()

  const curlLine = await waitFor(
    () => out.split('\n').find((line) => line.trim().startsWith('curl ')),
    'the demo to print its curl line',
    30_000,
  )
  const keyDir = /key in (\S+)\)/.exec(out)?.[1]
  assert.ok(keyDir && existsSync(keyDir), 'the throwaway key folder exists while the demo runs')

  const work = mkdtempSync(join(tmpdir(), 'demo-test-'))
  t.after(() => rmSync(work, { recursive: true, force: true }))
  const { stdout } = await promisify(execFile)('sh', ['-c', curlLine.trim()], { cwd: work })
  assert.match(stdout, /^200 image\/png \d+ bytes/)
  const image = readFileSync(join(work, 'sample.png'))
  assert.deepEqual(image.subarray(0, 8), PNG_SIGNATURE)
  assert.equal(stdout.split(' ')[2], String(image.length))

  demo.kill('SIGINT')
  assert.equal(await exited, 0)
  assert.equal(existsSync(keyDir), false, 'the throwaway keys are deleted')
})
