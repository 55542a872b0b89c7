// When a request is over, whichever way it ended. A response's 'close' is the usual signal, but
// a pipelined response still queued behind another never emits it if the client disconnects
// first; its socket's 'close' does. Both are watched, the callback runs once, and the socket
// listener is removed so that keep-alive connections do not collect them.
import type { FastifyReply } from 'fastify'

export function onRequestEnd(reply: FastifyReply, callback: () => void): void {
  const response = reply.raw
  const socket = reply.request.raw.socket
  let ended = false
  const end = () => {
    if (ended) return
    ended = true
    response.off('close', end)
    socket?.off('close', end)
    callback()
  }
  response.once('close', end)
  socket?.once('close', end)
}
