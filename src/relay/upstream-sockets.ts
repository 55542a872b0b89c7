// Which socket carried an upstream response, for the one question undici's handler API cannot
// answer: did a close-delimited body end with the upstream's FIN (complete) or with a reset
// (cut)? undici reports both as the body's end. Its public diagnostics channels tell: one names
// each request's socket as its headers are sent, the other is published synchronously just
// before the handler's onResponseStart. Requests of other undici users in the process (fetch)
// pass through the same channels and are simply never asked about.
import { subscribe } from 'node:diagnostics_channel'
import type { Socket } from 'node:net'

const socketOf = new WeakMap<object, Socket>()
let responding: Socket | undefined

subscribe('undici:client:sendHeaders', (message) => {
  const { request, socket } = message as { request: object; socket: Socket }
  socketOf.set(request, socket)
})
subscribe('undici:request:headers', (message) => {
  responding = socketOf.get((message as { request: object }).request)
})

/** The socket of the response whose onResponseStart is running now. */
export function respondingSocket(): Socket | undefined {
  const socket = responding
  responding = undefined
  return socket
}
