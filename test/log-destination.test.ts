// Proves log lines are batched (one write per 8 KiB, not one per line), never lost or reordered,
// written on flush and close, and kept, not thrown, when stdout is a full non-blocking pipe.
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { closeSync, constants, fstatSync, mkdtempSync, openSync, readFileSync, readSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { LogDestination } from '../src/observability/log-destination.js'

const BATCH = 8 * 1024

function line(n: number, pad = 0): string {
  return `${JSON.stringify({ n, pad: 'x'.repeat(pad) })}\n`
}

function tempDir(t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'log-destination-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

test('lines wait for a full batch, then go out in order; flush() and close() write the rest', (t) => {
  const path = join(tempDir(t), 'out.log')
  const fd = openSync(path, 'w')
  t.after(() => closeSync(fd))
  const destination = new LogDestination({ fd, batchBytes: BATCH, flushIntervalMs: 60_000 })
  const sizeOnDisk = () => fstatSync(fd).size

  destination.write(line(0, 100))
  assert.equal(sizeOnDisk(), 0, 'one short line is held')
  const expected = [line(0, 100)]
  let n = 1
  while (expected.join('').length < BATCH) {
    assert.equal(sizeOnDisk(), 0, `held until ${BATCH} bytes gathered`)
    expected.push(line(n, 100))
    destination.write(line(n++, 100))
  }
  assert.equal(readFileSync(path, 'utf8'), expected.join(''), 'the batch is written whole, in order')

  destination.write(line(n))
  expected.push(line(n++))
  destination.flush()
  assert.equal(readFileSync(path, 'utf8'), expected.join(''))

  destination.write(line(n))
  expected.push(line(n++))
  destination.close()
  assert.equal(readFileSync(path, 'utf8'), expected.join(''), 'close() writes what is left')
  destination.write(line(n))
  expected.push(line(n++))
  assert.equal(readFileSync(path, 'utf8'), expected.join(''), 'after close(), lines are written at once')
})

test('a full non-blocking pipe (EAGAIN) keeps the lines: none thrown, lost or reordered', (t) => {
  const fifo = join(tempDir(t), 'stdout.fifo')
  execFileSync('mkfifo', [fifo])
  const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK)
  const writer = openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK)
  t.after(() => {
    closeSync(writer)
    closeSync(reader)
  })
  const destination = new LogDestination({ fd: writer, batchBytes: BATCH, flushIntervalMs: 60_000 })
  t.after(() => destination.close())

  // Well past the pipe's capacity (64 KiB on Linux), with nobody reading.
  const expected: string[] = []
  for (let n = 0; n < 2_000; n++) {
    expected.push(line(n, 100))
    destination.write(line(n, 100))
  }
  const received: Buffer[] = []
  const chunk = Buffer.alloc(64 * 1024)
  const drainPipe = () => {
    for (;;) {
      let read: number
      try {
        read = readSync(reader, chunk)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EAGAIN') return
        throw err
      }
      if (read === 0) return
      received.push(Buffer.from(chunk.subarray(0, read)))
    }
  }
  drainPipe()
  const total = Buffer.byteLength(expected.join(''))
  assert.ok(Buffer.concat(received).length < total, 'the pipe filled up: the test exercised EAGAIN')
  for (let round = 0; round < 100 && Buffer.concat(received).length < total; round++) {
    destination.flush()
    drainPipe()
  }
  assert.equal(Buffer.concat(received).toString(), expected.join(''))
})
