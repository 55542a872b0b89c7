// Whether a client has taken anything from its socket lately, for the send timeout. A write's
// callback says so, but only once the kernel has taken the whole write, and the kernel wakes a
// writer only when a third of a large socket buffer is free: a client reading a few KB/s from
// localhost can take minutes to free that much. So when no write has completed, the kernel is
// asked (/proc/net/tcp) how many bytes sent to the client its program has not read yet: our
// socket's tx_queue (sent, not acknowledged), plus, when the client is on this machine (a
// sidecar's clients are), its own socket's rx_queue (received, not read). If that fell, the
// client read. The client's side matters on loopback: there a receive window opens only a
// segment (64 KiB) at a time, so a reader of a few KB/s moves our tx_queue once a minute or
// less, but its rx_queue with every read. Linux only; elsewhere write callbacks alone count.
import { readFileSync } from 'node:fs'
import type { Socket } from 'node:net'

const TABLES = ['/proc/net/tcp', '/proc/net/tcp6']
const ESTABLISHED = '01'
/** Timers of many stalled clients fire together: one read of the tables serves them all. */
const TABLE_TTL_MS = 250

/** tx_queue and rx_queue by "localPort:remotePort" (hex, as the tables write them); null where ambiguous. */
let table: Map<string, Queues | null> | undefined
let tableReadAt = 0
let unavailable = false

interface Queues {
  readonly tx: number
  readonly rx: number
}

/**
 * Bytes written to the socket that the program at the other end has not read: those not yet
 * acknowledged, plus those its socket holds unread when it is on this machine. Undefined when
 * unknown.
 */
export function unreadBytes(socket: Socket): number | undefined {
  if (unavailable || socket.localPort === undefined || socket.remotePort === undefined) return undefined
  const now = performance.now()
  if (table === undefined || now - tableReadAt > TABLE_TTL_MS) {
    table = readTables()
    tableReadAt = now
    if (table === undefined) {
      unavailable = true
      return undefined
    }
  }
  const local = hexPort(socket.localPort)
  const remote = hexPort(socket.remotePort)
  const ours = table.get(`${local}:${remote}`)
  if (!ours) return undefined
  // The client's end, if it is here: its local port is our remote one.
  const theirs = table.get(`${remote}:${local}`)
  return ours.tx + (theirs ? theirs.rx : 0)
}

function readTables(): Map<string, Queues | null> | undefined {
  const queues = new Map<string, Queues | null>()
  let found = false
  for (const path of TABLES) {
    let text: string
    try {
      text = readFileSync(path, 'latin1')
    } catch {
      continue
    }
    found = true
    // "sl local_address rem_address st tx_queue:rx_queue ...", addresses as HEXADDR:HEXPORT.
    for (const line of text.split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/)
      if (fields.length < 5 || fields[3] !== ESTABLISHED) continue
      const local = fields[1] as string
      const remote = fields[2] as string
      const key = `${local.slice(local.lastIndexOf(':') + 1)}:${remote.slice(remote.lastIndexOf(':') + 1)}`
      const [tx, rx] = (fields[4] as string).split(':').map((hex) => Number.parseInt(hex, 16)) as [number, number]
      queues.set(key, queues.has(key) ? null : { tx, rx })
    }
  }
  return found ? queues : undefined
}

function hexPort(port: number): string {
  return port.toString(16).toUpperCase().padStart(4, '0')
}
