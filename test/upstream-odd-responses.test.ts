// Proves responses the emulator never sends are relayed sanely: a 103 Early Hints before the
// real response, a 304 that carries Content-Length (RFC 9110 allows it; there is no body), a
// status no client could be given (502 problem+json); and a 503 whose body is cut off is still retried.
import assert from 'node:assert/strict'
import net from 'node:net'
import { type TestContext, test } from 'node:test'
import { request } from 'undici'
import { MEDIA_ID, startProxy } from './helpers.js'

/** An upstream that answers every request with these exact bytes and keeps the connection. */
async function scriptedUpstream(t: TestContext, answer: string): Promise<string> {
  const sockets = new Set<net.Socket>()
  const server = net.createServer((socket) => {
    sockets.add(socket)
    socket.on('error', () => {})
    let head = ''
    socket.on('data', (data: Buffer) => {
      head += data.toString('latin1')
      while (head.includes('\r\n\r\n')) {
        head = head.slice(head.indexOf('\r\n\r\n') + 4)
        socket.write(answer)
      }
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.after(() => {
    for (const socket of sockets) socket.destroy()
    server.close()
  })
  return `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`
}

test('a 103 Early Hints before the response is skipped; the 200 and its body arrive whole', async (t) => {
  const upstream = await scriptedUpstream(
    t,
    'HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n' +
      'HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 5\r\n\r\nhello',
  )
  const proxy = await startProxy(t, upstream)
  const res = await request(`${proxy.mediaUrl}/media/${MEDIA_ID}`)
  assert.equal(res.statusCode, 200)
  assert.equal(res.headers['content-type'], 'image/png')
  assert.equal(res.headers.link, undefined)
  assert.equal(await res.body.text(), 'hello')
})

test('an unsolicited 100 Continue is skipped like a 103: one upstream request, the 200 whole, the connection reused', async (t) => {
  let requests = 0
  const sockets = new Set<net.Socket>()
  const continueHead = 'HTTP/1.1 100 Continue\r\nX-Odd: yes\r\n\r\n'
  const server = net.createServer((socket) => {
    sockets.add(socket)
    socket.on('error', () => {})
    let head = ''
    socket.on('data', async (data: Buffer) => {
      head += data.toString('latin1')
      while (head.includes('\r\n\r\n')) {
        head = head.slice(head.indexOf('\r\n\r\n') + 4)
        const n = requests++
        if (n === 0) {
          // Two 100s, the first split across writes, then the response in its own write.
          socket.write(continueHead.slice(0, 14))
          await new Promise((resolve) => setTimeout(resolve, 20))
          socket.write(continueHead.slice(14) + continueHead)
          await new Promise((resolve) => setTimeout(resolve, 20))
          socket.write('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello')
        } else {
          // On the reused connection: a 100 and the response in one write.
          socket.write(`${continueHead}HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhello!`)
        }
      }
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.after(() => {
    for (const socket of sockets) socket.destroy()
    server.close()
  })
  const proxy = await startProxy(t, `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`)
  const first = await request(`${proxy.mediaUrl}/media/${MEDIA_ID}`)
  assert.equal(first.statusCode, 200)
  assert.equal(first.headers['x-odd'], undefined)
  assert.equal(await first.body.text(), 'hello')
  const second = await request(`${proxy.mediaUrl}/media/${MEDIA_ID}`)
  assert.equal(second.statusCode, 200)
  assert.equal(await second.body.text(), 'hello!')
  assert.equal(requests, 2, 'neither was retried')
  assert.equal(sockets.size, 1, 'the connection was kept')
})

test('a 304 carrying Content-Length reaches the client as a 304, and the connection stays usable', async (t) => {
  const upstream = await scriptedUpstream(t, 'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nContent-Length: 5\r\n\r\n')
  const proxy = await startProxy(t, upstream)
  for (let i = 0; i < 2; i++) {
    const res = await request(`${proxy.mediaUrl}/media/${MEDIA_ID}`, { headers: { 'if-none-match': '"v1"' } })
    assert.equal(res.statusCode, 304)
    assert.equal(res.headers.etag, '"v1"')
    assert.equal(await res.body.text(), '')
  }
  await new Promise((resolve) => setImmediate(resolve))
  assert.equal(proxy.app.inFlight.count, 0)
})

test('a status above 599 from upstream becomes a 502 problem+json', async (t) => {
  const upstream = await scriptedUpstream(t, 'HTTP/1.1 799 Odd\r\nContent-Length: 0\r\n\r\n')
  const proxy = await startProxy(t, upstream)
  const res = await request(`${proxy.mediaUrl}/media/${MEDIA_ID}`)
  assert.equal(res.statusCode, 502)
  assert.equal(res.headers['content-type'], 'application/problem+json')
  const problem = (await res.body.json()) as { type: string }
  assert.equal(problem.type, 'urn:vonage-media-proxy:problem:upstream-unavailable')
})

test('a 503 whose body is cut off is still retried, and the retry answers', async (t) => {
  let connections = 0
  const sockets = new Set<net.Socket>()
  const server = net.createServer((socket) => {
    sockets.add(socket)
    socket.on('error', () => {})
    const first = connections++ === 0
    socket.once('data', () => {
      if (first) {
        // Headers and part of the body, then the connection is gone.
        socket.write('HTTP/1.1 503 Service Unavailable\r\nContent-Length: 100\r\n\r\npartial')
        setImmediate(() => socket.destroy())
      } else {
        socket.write('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello')
      }
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.after(() => {
    for (const socket of sockets) socket.destroy()
    server.close()
  })
  const proxy = await startProxy(
    t,
    `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    {},
    { retry: { maxRetries: 2, baseDelayMs: 1, maxDelayMs: 5 } },
  )
  const res = await request(`${proxy.mediaUrl}/media/${MEDIA_ID}`)
  assert.equal(res.statusCode, 200)
  assert.equal(await res.body.text(), 'hello')
  assert.equal(connections, 2)
})
