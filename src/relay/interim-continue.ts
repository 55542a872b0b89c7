// An upstream that answers `100 Continue` nobody asked for (the proxy never sends Expect):
// undici destroys the connection on it ("bad response") before any handler hears of it, so the
// request would be retried as a reset and end in 502. RFC 9110 15.2 says a client must be able
// to parse a 1xx it did not expect, and skip it: so the 100 is removed from the socket's bytes
// before undici's parser reads them, as a 103 Early Hints is skipped after.
//
// undici reads a connection's bytes with socket.read() only (client-h1.js), one request at a
// time (pipelining 1): a response begins with the first bytes read after a request is written.
// Only there is a 100 looked for, so a body is never inspected.
import type { Socket } from 'node:net'

/** `HTTP/1.x 100` and its header block, at the start of a response. */
const CONTINUE = /^HTTP\/1\.[01] 100(?: [^\r\n]*)?\r\n(?:[^\r\n]+\r\n)*\r\n/
/** What may still become one: the bytes read so far are a prefix of a 100's head. */
const CONTINUE_PREFIX = /^H(?:T(?:T(?:P(?:\/(?:1(?:\.(?:[01](?: (?:1(?:0(?:0.*)?)?)?)?)?)?)?)?)?)?)?$/s
/** A 100 with a header block larger than this is no 100 we will wait for. */
const MAX_HEAD_BYTES = 8 * 1024

export function skipUnsolicitedContinue(socket: Socket): void {
  const read = socket.read.bind(socket)
  const write = socket.write.bind(socket) as (...args: unknown[]) => boolean
  /** True from a request's write to its response's first bytes. */
  let atResponseStart = false
  let held: Buffer | undefined

  socket.write = ((...args: unknown[]) => {
    atResponseStart = true
    return write(...args)
  }) as Socket['write']

  socket.read = ((size?: number) => {
    if (!atResponseStart && held === undefined) return read(size)
    const chunk = read(size) as Buffer | null
    if (chunk === null && held === undefined) return null
    let data: Buffer = held === undefined ? (chunk as Buffer) : chunk === null ? held : Buffer.concat([held, chunk])
    held = undefined
    while (true) {
      // The usual case, at no cost: a status line whose code is not 100.
      if (data.length >= 12 && !(data[9] === 0x31 && data[10] === 0x30 && data[11] === 0x30)) break
      const head = data.toString('latin1', 0, Math.min(data.length, MAX_HEAD_BYTES))
      const match = CONTINUE.exec(head)
      if (match) {
        data = data.subarray(match[0].length)
        if (data.length === 0) return null
        continue
      }
      if (data.length < MAX_HEAD_BYTES && (CONTINUE_PREFIX.test(head) || /^HTTP\/1\.[01] 100[ \r]/.test(head))) {
        // Possibly a 100 whose end has not arrived: wait for more bytes ('readable' follows).
        if (socket.readableEnded) break
        held = data
        return null
      }
      break
    }
    atResponseStart = false
    return data
  }) as Socket['read']
}
