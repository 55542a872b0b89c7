// When a request is over, whichever way it ended. A response's 'close' is the usual signal,
// but a pipelined response still queued behind another never emits it if the client
// disconnects first: its socket's 'close' does. Each socket gets one 'close' listener, however
// many requests are queued on it, and each callback runs once.
import type { ServerResponse } from 'node:http'
import type { Socket } from 'node:net'

type EndCallback = () => void

/** The requests on a socket that are not over yet. */
const open = new WeakMap<Socket, Set<EndCallback>>()
/** What waits for a socket's open requests to be over. */
const waiting = new WeakMap<Socket, EndCallback[]>()

export function onRequestEnd(response: ServerResponse, socket: Socket, callback: EndCallback): void {
  let requests = open.get(socket)
  if (requests === undefined) {
    const set = new Set<EndCallback>()
    requests = set
    open.set(socket, set)
    socket.once('close', () => {
      for (const end of set) end()
    })
  }
  const onSocket = requests
  const end = () => {
    if (!onSocket.delete(end)) return
    response.off('close', end)
    callback()
    if (onSocket.size === 0) for (const next of waiting.get(socket)?.splice(0) ?? []) next()
  }
  onSocket.add(end)
  response.once('close', end)
  // Already closed (a pipelined request parsed just before the client left): no event will come.
  if (socket.destroyed) setImmediate(end)
}

/** Runs `callback` once every request open on the socket is over (at once if none is). */
export function afterOpenRequests(socket: Socket, callback: EndCallback): void {
  if (!open.get(socket)?.size) {
    callback()
    return
  }
  const waiters = waiting.get(socket)
  if (waiters) waiters.push(callback)
  else waiting.set(socket, [callback])
}
