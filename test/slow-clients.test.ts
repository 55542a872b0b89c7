// Proves what a slow client gets: the send timeout measures progress (a client that reads,
// however slowly, is never cut; one whose socket takes nothing is), and the access line counts
// the bytes the client's socket took, marking a download the client left as aborted.
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { test } from 'node:test'
import { accessLines, MEDIA_ID, pausedDownload, startEmulator, startProxy, waitFor } from './helpers.js'

const SEND_TIMEOUT_MS = 1_500

test('a client reading slowly but steadily is not cut by the send timeout, however long it takes', {
  timeout: 30_000,
}, async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, 64 * 1024 * 1024)
  emulator.faults.push({ closeConnection: true })
  const proxy = await startProxy(t, emulator.url, {}, { sendTimeoutMs: SEND_TIMEOUT_MS })
  const res = await pausedDownload(`${proxy.mediaUrl}/media/${MEDIA_ID}`)
  t.after(() => res.destroy())
  // Let every buffer between the two fill, so that the relay waits for the client throughout.
  await new Promise((resolve) => setTimeout(resolve, 500))
  let received = 0
  let cut = false
  res.once('close', () => {
    cut = !res.complete
  })
  // About 1 MB a second, in 64 KiB reads, for three send timeouts: far slower than the upstream,
  // so the download waits for the client throughout, and never with an empty buffer. (The test
  // below reads a few KB/s, from the kernel itself.)
  const until = Date.now() + 3 * SEND_TIMEOUT_MS
  while (Date.now() < until && !cut) {
    const chunk = res.read(64 * 1024) as Buffer | null
    if (chunk) received += chunk.length
    await new Promise((resolve) => setTimeout(resolve, 60))
  }
  assert.equal(cut, false, `cut after ${received} bytes although the client was reading`)
  assert.ok(received > 0)
  assert.equal(accessLines(proxy).length, 0, 'the download is still going')
})

/**
 * A client that reads from the kernel itself, a little at a time (Node's own sockets read 64 KiB
 * at once): waits waitMs, then takes readBytes every intervalMs for readForMs, and prints
 * what it got and whether the connection was cut.
 */
const SLOW_READER = `
import socket, sys, time
host, port, path, wait_ms, read_bytes, interval_ms, read_for_ms = sys.argv[1:8]
s = socket.create_connection((host, int(port)))
s.sendall(f"GET {path} HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n".encode())
time.sleep(int(wait_ms) / 1000)
got, cut = 0, False
until = time.monotonic() + int(read_for_ms) / 1000
while time.monotonic() < until:
    try:
        chunk = s.recv(int(read_bytes))
    except ConnectionResetError:
        cut = True
        break
    if not chunk:
        cut = True
        break
    got += len(chunk)
    time.sleep(int(interval_ms) / 1000)
print(got, "cut" if cut else "reading")
`

test('a client reading a few KB/s over loopback is not cut: its own unread bytes show its progress', {
  timeout: 30_000,
}, async (t) => {
  if (spawnSync('python3', ['--version']).status !== 0) {
    t.skip('python3 not installed: the kernel-level slow reader is not run')
    return
  }
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, 64 * 1024 * 1024)
  const proxy = await startProxy(t, emulator.url, {}, { sendTimeoutMs: SEND_TIMEOUT_MS })
  const { hostname, port } = new URL(proxy.mediaUrl)
  // 2 KiB every 250 ms (8 KB/s) for four send timeouts, after a second that fills every buffer:
  // far less than one 64 KiB loopback segment per timeout, so the proxy's own send queue stands still.
  const reader = spawn('python3', [
    '-c',
    SLOW_READER,
    hostname,
    port,
    `/media/${MEDIA_ID}`,
    '1000',
    '2048',
    '250',
    String(4 * SEND_TIMEOUT_MS),
  ])
  t.after(() => reader.kill())
  let output = ''
  reader.stdout.on('data', (chunk: Buffer) => {
    output += chunk.toString()
  })
  const code = await new Promise<number | null>((resolve) => reader.on('close', resolve))
  assert.equal(code, 0)
  const [got, state] = output.trim().split(' ')
  assert.equal(state, 'reading', `cut after ${got} bytes although the client was reading`)
  assert.ok(!proxy.logs.some((entry) => entry.msg === 'media response cut short'), 'the send timeout never fired')
})

test('a client whose socket takes nothing is cut after the send timeout, logged as aborted with the bytes it took', async (t) => {
  const emulator = await startEmulator(t)
  const size = 64 * 1024 * 1024
  emulator.media.addSynthetic(MEDIA_ID, size)
  emulator.faults.push({ closeConnection: true })
  const proxy = await startProxy(t, emulator.url, {}, { sendTimeoutMs: SEND_TIMEOUT_MS })
  const res = await pausedDownload(`${proxy.mediaUrl}/media/${MEDIA_ID}`)
  t.after(() => res.destroy())
  const line = await waitFor(() => accessLines(proxy)[0], 'the stalled download to be cut', 10_000)
  assert.equal(line.aborted, true)
  assert.ok(Number(line.bytes) < size / 2, `${line.bytes} bytes logged for a client that read none`)
  assert.ok(proxy.logs.some((entry) => entry.msg === 'media response cut short'))
  const upstream = await waitFor(() => emulator.requests[0], 'the upstream request')
  await waitFor(() => upstream.closed, 'the upstream request to be cancelled')
})

test('a client that reads part of a Connection: close download and leaves is logged as aborted, with fewer bytes than the file', async (t) => {
  const emulator = await startEmulator(t)
  const size = 64 * 1024 * 1024
  emulator.media.addSynthetic(MEDIA_ID, size)
  emulator.faults.push({ closeConnection: true })
  const proxy = await startProxy(t, emulator.url)
  const res = await pausedDownload(`${proxy.mediaUrl}/media/${MEDIA_ID}`)
  let received = 0
  res.on('data', (chunk: Buffer) => {
    received += chunk.length
    if (received >= 200 * 1024) res.destroy()
  })
  res.resume()
  const line = await waitFor(() => accessLines(proxy)[0], 'the access line')
  assert.equal(line.aborted, true)
  assert.ok(Number(line.bytes) >= 200 * 1024, `${line.bytes} bytes: at least what the client read`)
  assert.ok(Number(line.bytes) < size / 2, `${line.bytes} bytes logged for a client that read 200 KiB`)
})

test('a client that stops reading with the last bytes still queued is cut by the send timeout too', async (t) => {
  const emulator = await startEmulator(t)
  const size = 16 * 1024 * 1024
  emulator.media.addSynthetic(MEDIA_ID, size)
  // No pause before the end: the whole body is queued for the client, and the relay has ended
  // the response, so only the bytes still waiting can tell that the client stopped.
  const proxy = await startProxy(t, emulator.url, {}, { sendTimeoutMs: SEND_TIMEOUT_MS, relayBufferBytes: 2 ** 30 })
  const res = await pausedDownload(`${proxy.mediaUrl}/media/${MEDIA_ID}`)
  t.after(() => res.destroy())
  const line = await waitFor(() => accessLines(proxy)[0], 'the stalled response to be cut', 10_000)
  assert.equal(line.aborted, true)
  assert.ok(Number(line.bytes) < size)
  assert.equal(proxy.app.inFlight.count, 0, 'the slot is free again')
})
